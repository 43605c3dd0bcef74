// Bundles web/src into src/tether/web/static/ (build output, gitignored, shipped in the wheel):
//   index.html, app.js (the page, xterm.js included), app.css (xterm's CSS included),
//   tether-client.js (the client module alone, unminified, for other web apps).
// The client package (packages/client) gets its close-code table generated first.
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCloseCodeTable } from './packages/client/scripts/close-codes.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, '..', 'src', 'tether', 'web', 'static');
const common = { bundle: true, format: 'esm', target: ['es2020'], logLevel: 'warning', legalComments: 'eof' };

await writeCloseCodeTable();
await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });
await Promise.all([
  build({ ...common, entryPoints: [join(here, 'src', 'app.js')], outfile: join(outdir, 'app.js'), minify: true }),
  build({ ...common, entryPoints: [join(here, 'src', 'tether-client.js')], outfile: join(outdir, 'tether-client.js') }),
  build({ ...common, entryPoints: [join(here, 'src', 'app.css')], outfile: join(outdir, 'app.css'), minify: true }),
  copyFile(join(here, 'src', 'index.html'), join(outdir, 'index.html')),
]);
