// Exactly-once input (docs/protocol.md, section 4). Every input byte this client sends keeps a place
// in one stream that counts from 0; the server acknowledges a prefix of it (`ack`, and
// `input_acked` in each hello). Bytes not yet acknowledged stay here and are sent again on the
// next connection, minus the prefix its hello says was already written.

export const MAX_FRAME_BYTES = 64 * 1024;

const encoder = new TextEncoder();

/**
 * Input as bytes: strings are UTF-8; Uint8Array and ArrayBuffer are taken as they are.
 * @param {string | Uint8Array | ArrayBuffer} data
 * @returns {Uint8Array}
 */
export function toBytes(data) {
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError('input must be a string, a Uint8Array or an ArrayBuffer');
}

export class InputQueue {
  constructor() {
    /** @type {Uint8Array[]} */
    this._chunks = [];
    this._start = 0; // stream position of the first byte still held
    this._held = 0;
  }

  /** Stream position of the first unacknowledged byte: what the server has acknowledged. */
  get acknowledged() { return this._start; }
  /** Bytes held, waiting for an acknowledgement. */
  get pendingBytes() { return this._held; }
  /** Stream position after the last byte queued. */
  get total() { return this._start + this._held; }

  /** @param {Uint8Array} bytes */
  push(bytes) {
    if (bytes.length === 0) return;
    this._chunks.push(bytes);
    this._held += bytes.length;
  }

  /**
   * The server has written the first `count` bytes of the stream: drop them.
   * @param {number} count
   */
  acknowledge(count) {
    let drop = Math.min(count - this._start, this._held);
    if (drop <= 0) return;
    this._start += drop;
    this._held -= drop;
    while (drop > 0) {
      const head = this._chunks[0];
      if (head.length <= drop) {
        this._chunks.shift();
        drop -= head.length;
      } else {
        this._chunks[0] = head.subarray(drop);
        drop = 0;
      }
    }
  }

  /**
   * A hello says the server has written `inputAcked` bytes from this client id. Drop those;
   * everything still held is to be sent again. A count below what was acknowledged before means
   * the server counts afresh (its record was lost): the held bytes are re-based onto its count.
   * When the count is beyond what this queue ever held (a client id reused after a page reload),
   * the stream jumps forward to it.
   * @param {number} inputAcked
   */
  resume(inputAcked) {
    if (inputAcked < this._start) {
      this._start = inputAcked;
    } else if (inputAcked > this.total) {
      this.clear(inputAcked);
    } else {
      this.acknowledge(inputAcked);
    }
  }

  /**
   * The held bytes as frames of at most `maxFrame` bytes, oldest first.
   * @returns {Uint8Array[]}
   */
  frames(maxFrame = MAX_FRAME_BYTES) {
    const frames = [];
    for (const chunk of this._chunks) {
      for (let at = 0; at < chunk.length; at += maxFrame) {
        frames.push(chunk.subarray(at, at + maxFrame));
      }
    }
    return frames;
  }

  /** Drop everything held (a new session): the stream starts again at `start`. */
  clear(start = 0) {
    this._chunks = [];
    this._start = start;
    this._held = 0;
  }
}
