import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InputQueue } from '../../web/packages/client/src/input-queue.js';
import { toBytes } from '../../web/packages/client/src/input-queue.js';

const text = (frames) => frames.map((f) => new TextDecoder().decode(f)).join('');

function queueOf(...chunks) {
  const queue = new InputQueue();
  for (const chunk of chunks) queue.push(toBytes(chunk));
  return queue;
}

describe('InputQueue', () => {
  test('acknowledge drops whole chunks and prefixes', () => {
    const queue = queueOf('abc', 'def', 'g');
    queue.acknowledge(4);
    assert.equal(text(queue.frames()), 'efg');
    assert.equal(queue.acknowledged, 4);
    assert.equal(queue.total, 7);
    queue.acknowledge(2); // an older ack arriving late changes nothing
    assert.equal(queue.pendingBytes, 3);
    queue.acknowledge(100); // more than was ever sent: everything is gone, nothing more
    assert.equal(queue.pendingBytes, 0);
    assert.equal(queue.acknowledged, 7);
  });

  test('resume drops what the server says it wrote', () => {
    const queue = queueOf('hello');
    queue.resume(2);
    assert.equal(text(queue.frames()), 'llo');
  });

  test('resume below the acknowledged count re-bases the stream on the server count', () => {
    const queue = queueOf('abcdef');
    queue.acknowledge(4);
    queue.resume(0);
    assert.equal(text(queue.frames()), 'ef');
    queue.acknowledge(1);
    assert.equal(text(queue.frames()), 'f');
  });

  test('resume beyond the stream jumps forward (a client id the server knew already)', () => {
    const queue = queueOf('ab');
    queue.resume(50);
    assert.equal(queue.pendingBytes, 0);
    queue.push(toBytes('c'));
    queue.acknowledge(51);
    assert.equal(queue.pendingBytes, 0);
  });

  test('frames are cut at the frame size', () => {
    const queue = queueOf('abcdefg');
    assert.deepEqual(queue.frames(3).map((f) => f.length), [3, 3, 1]);
  });

  test('toBytes takes strings, bytes and buffers only', () => {
    assert.deepEqual([...toBytes('é')], [0xc3, 0xa9]);
    assert.deepEqual([...toBytes(new Uint8Array([1]).buffer)], [1]);
    assert.throws(() => toBytes(42), TypeError);
  });

  test('empty input is not queued', () => {
    const queue = queueOf('');
    assert.equal(queue.frames().length, 0);
  });
});
