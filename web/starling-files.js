/**
 * starling-files.js: files in chat (docs/files.md). Uploads a file to the
 * broker's tus 1.0 endpoint with tus-js-client, resumably and skipping
 * content the user already uploaded, then publishes the chat message that
 * carries it (docs/scenarios.md, "Files in chat").
 *
 * ```js
 * import { sendFile, isFileMessage } from "./starling-files.js";
 * const { message, instant } = await sendFile(client, "chat/room1", file, {
 *   endpoint: "http://localhost:8083/files/", onProgress: (sent, total) => {} });
 * // Receivers: isFileMessage(JSON.parse(text)) -> show `/files/${id}`.
 * ```
 *
 * Loading: "tus-js-client" is the npm package in Node (`npm ci` in web/) and
 * web/vendor/tus.js in browsers (mapped by web/importmap.json).
 *
 * Instant upload: the helper hashes the file (SHA-256) and creates the upload
 * itself, announcing the hash in Upload-Metadata. When the broker already
 * holds that content from this same user, the creation answer says
 * Upload-Offset = length; tus-js-client, given the upload's URL, sends one
 * HEAD and finishes without sending a byte of the body.
 */
import { Upload } from "tus-js-client";

/** Lowercase hex of bytes. */
function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function base64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** tus Upload-Metadata: `key base64(utf8 value)` pairs. */
function encodeMetadata(metadata) {
  return Object.entries(metadata)
    .map(([k, v]) => `${k} ${base64(new TextEncoder().encode(String(v)))}`)
    .join(",");
}

/** SHA-256 of a Blob/File (browsers) or a Uint8Array/Buffer (Node), as bytes. */
export async function sha256(file) {
  const data = typeof Blob !== "undefined" && file instanceof Blob ? await file.arrayBuffer() : file;
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

/**
 * Uploads `file` (a File or Blob in browsers; a Uint8Array or Buffer in Node)
 * to `endpoint` (the broker's `/files/` URL). Resolves to the file's
 * description: `{ id, url, name, size, mime, sha256, instant }`.
 *
 * Options: `token` (sent as Authorization: Bearer; the same token as the
 * WebSocket connection), `name` and `mime` (default: the File's), `private`
 * (only the uploader may download), `chunkSize` (bytes per PATCH, default
 * 5 MiB), `retryDelays` (ms between attempts after a network failure),
 * `onProgress(sent, total)`, and `onRequest(method)` called before each
 * HTTP request (to observe what is sent).
 */
export async function uploadFile(file, options) {
  const { endpoint, token, chunkSize = 5 * 1024 * 1024, onProgress, onRequest } = options;
  const retryDelays = options.retryDelays ?? [0, 1000, 3000, 5000, 10000];
  const size = file.size ?? file.length;
  const name = options.name ?? file.name ?? "file";
  const mime = options.mime ?? (file.type || "application/octet-stream");
  const digest = await sha256(file);
  const metadata = { filename: name, filetype: mime, sha256: base64(digest) };
  if (options.private) metadata.private = "true";
  const headers = token ? { Authorization: `Bearer ${token}` } : {};

  // Create the upload ourselves, so an answer of "already complete" (content
  // this user uploaded before) costs no body at all.
  onRequest?.("POST");
  const created = await fetch(endpoint, {
    method: "POST",
    headers: {
      ...headers,
      "Tus-Resumable": "1.0.0",
      "Upload-Length": String(size),
      "Upload-Metadata": encodeMetadata(metadata),
    },
  });
  if (created.status !== 201) {
    throw new Error(`upload refused (${created.status}): ${(await created.text()).trim()}`);
  }
  const url = new URL(created.headers.get("Location"), endpoint).href;
  const instant = Number(created.headers.get("Upload-Offset")) === size;

  await new Promise((resolve, reject) => {
    const upload = new Upload(file, {
      endpoint,
      uploadUrl: url,
      headers,
      metadata,
      chunkSize,
      retryDelays,
      uploadSize: size,
      // The broker keeps the upload's place; nothing to remember locally.
      storeFingerprintForResuming: false,
      onBeforeRequest: (req) => onRequest?.(req.getMethod()),
      onProgress: (sent, total) => onProgress?.(sent, total),
      onSuccess: resolve,
      onError: reject,
    });
    upload.start();
  });
  const id = new URL(url).pathname.split("/").pop();
  return { id, url, name, size, mime, sha256: hex(digest), instant };
}

/** The chat payload that carries a file (docs/scenarios.md). */
export function fileMessage(file) {
  return { type: "file", id: file.id, name: file.name, size: file.size, mime: file.mime, sha256: file.sha256 };
}

/** Whether a parsed chat payload is a file message. */
export function isFileMessage(payload) {
  return (
    payload !== null &&
    typeof payload === "object" &&
    payload.type === "file" &&
    typeof payload.id === "string" &&
    /^[0-9a-f]{32}$/.test(payload.id)
  );
}

/**
 * Uploads `file`, then publishes its file message to `topic` with
 * `client.publish` (a StarlingClient, QoS 1). Resolves to
 * `{ file, message, instant }`.
 */
export async function sendFile(client, topic, file, options) {
  const uploaded = await uploadFile(file, options);
  const message = fileMessage(uploaded);
  await client.publish(topic, JSON.stringify(message), { qos: 1 });
  return { file: uploaded, message, instant: uploaded.instant };
}
