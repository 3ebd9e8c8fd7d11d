// tus-js-client (unmodified, from npm) and web/starling-files.js against
// starling's /files/ endpoint, driven by tests/files_clients.rs over a line
// protocol on stdout (see tests/common/node.rs).
//
//   node tus_upload_test.mjs resume  BASE FILE   50 MB in 5 MB chunks; prints
//        HALFWAY once 40 % is sent (the test then SIGKILLs and restarts the
//        broker on the same port), then UPLOADED URL BYTES_SENT and
//        DOWNLOADED SHA256 of the file fetched back.
//   node tus_upload_test.mjs instant BASE FILE   the helper twice: the second
//        upload of the same content is instant (no PATCH, no body byte).
//   node tus_upload_test.mjs refused BASE FILE   an upload over the size
//        limit fails with 413; an upload aborted with termination is gone.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as tus from "tus-js-client";
import { uploadFile } from "../../web/starling-files.js";

const [mode, base, path] = process.argv.slice(2);
const endpoint = `${base}/files/`;
const file = readFileSync(path);
const say = (line) => process.stdout.write(`${line}\n`);

function fail(err) {
  say(`ERROR ${err?.message ?? err}`);
  process.exit(1);
}

async function sha256OfDownload(url) {
  const response = await fetch(url);
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status}`);
  return createHash("sha256").update(Buffer.from(await response.arrayBuffer())).digest("hex");
}

/** Runs one tus-js-client upload; resolves to the upload once it succeeded. */
function runUpload(data, options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      chunkSize: 5 * 1024 * 1024,
      metadata: { filename: "big.bin", filetype: "application/octet-stream" },
      ...options,
      onSuccess: () => resolve(upload),
      onError: reject,
    });
    upload.start();
  });
}

async function resume() {
  // Bytes put on the wire: a request's progress counts up from the offset it
  // started at; after a failure the next request starts lower again.
  let sent = 0;
  let last = 0;
  let halfway = false;
  const upload = await runUpload(file, {
    retryDelays: [100, 250, 500, 1000, 1000, 2000, 2000, 3000, 3000, 5000, 5000],
    onProgress: (bytes) => {
      if (bytes > last) sent += bytes - last;
      last = bytes;
      if (!halfway && bytes >= file.length * 0.4) {
        halfway = true;
        say("HALFWAY");
      }
    },
    onBeforeRequest: (req) => {
      // A new request after a failure starts at the broker's durable offset.
      if (req.getMethod() === "HEAD") last = Number.MAX_SAFE_INTEGER;
    },
    onAfterResponse: (req, res) => {
      if (req.getMethod() === "HEAD") last = Number(res.getHeader("Upload-Offset"));
    },
  });
  say(`UPLOADED ${upload.url} ${sent}`);
  say(`DOWNLOADED ${await sha256OfDownload(upload.url)}`);
}

async function instant() {
  for (const round of ["FIRST", "SECOND"]) {
    const methods = [];
    let progress = 0;
    const uploaded = await uploadFile(file, {
      endpoint,
      name: "cat.jpg",
      mime: "image/jpeg",
      chunkSize: 1024 * 1024,
      onRequest: (method) => methods.push(method),
      onProgress: (bytes) => {
        progress = Math.max(progress, bytes);
      },
    });
    const sha = await sha256OfDownload(uploaded.url);
    say(`${round} instant=${uploaded.instant} methods=${[...new Set(methods)].join(",")} sha256=${sha}`);
  }
}

async function refused() {
  try {
    await runUpload(file, { retryDelays: null });
    fail("an upload over the limit succeeded");
  } catch (err) {
    say(`REFUSED ${err.originalResponse?.getStatus()}`);
  }
  // Termination: abort(true) after the first chunk deletes the upload.
  const small = file.subarray(0, 3000);
  const url = await new Promise((resolve, reject) => {
    const upload = new tus.Upload(small, {
      endpoint,
      chunkSize: 1000,
      retryDelays: null,
      onChunkComplete: () => {
        upload.abort(true).then(() => resolve(upload.url), reject);
      },
      onError: reject,
    });
    upload.start();
  });
  const head = await fetch(url, { method: "HEAD", headers: { "Tus-Resumable": "1.0.0" } });
  say(`TERMINATED ${head.status}`);
}

try {
  await { resume, instant, refused }[mode]();
  say("DONE");
} catch (err) {
  fail(err);
}
