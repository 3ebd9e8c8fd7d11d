// The web demo's attachments in headless Chromium, driven by tests/browser.rs:
// `node files_demo_test.mjs http://127.0.0.1:PORT/ SCREENSHOT_DIR`.
//
// Page A drops a picture into the chat (a real drop event carrying a File),
// sees the progress bar move; page B shows the thumbnail; B reloads and sees
// it again from the room's history; A pastes the same picture and the upload
// is instant. One line per step; every wait is a playwright wait on what the
// page shows, with a timeout.
import { join } from "node:path";
import { launch, newPage, until } from "./chromium.mjs";

const [url, shots] = process.argv.slice(2);
const say = (line) => console.log(line);
const browser = await launch();

async function open(name) {
  const page = await newPage(browser.context, name);
  await page.goto(url);
  await until(page, "the page to connect and load history", () => window.demoState?.ready);
  return page;
}

/** Hands the page a noisy 600x400 PNG (about 700 KB) through `how`: a drop on the chat, or a paste. */
async function give(page, how) {
  await page.evaluate(async (how) => {
    if (!window.testPicture) {
      const canvas = new OffscreenCanvas(600, 400);
      const g = canvas.getContext("2d");
      const pixels = g.createImageData(600, 400);
      for (let i = 0; i < pixels.data.length; i += 65536) {
        crypto.getRandomValues(pixels.data.subarray(i, i + 65536));
      }
      for (let i = 3; i < pixels.data.length; i += 4) pixels.data[i] = 255; // opaque
      g.putImageData(pixels, 0, 0);
      window.testPicture = await canvas.convertToBlob({ type: "image/png" });
    }
    const data = new DataTransfer();
    data.items.add(new File([window.testPicture], "noise.png", { type: "image/png" }));
    if (how === "drop") {
      document.getElementById("chat").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
    } else {
      document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
    }
  }, how);
}

/** Width x height of every loaded thumbnail in the chat. */
const thumbnails = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll("#chat-log img.thumb")]
      .filter((img) => img.complete && img.naturalWidth > 0)
      .map((img) => `${img.naturalWidth}x${img.naturalHeight}`),
  );

try {
  const a = await open("A");
  const b = await open("B");
  await a.fill("#chat-name", "ada");

  await give(a, "drop");
  await until(a, "the progress bar", () => !document.getElementById("chat-progress").hidden);
  await until(a, "the upload to finish", () => window.demoState.uploads[0]?.done || window.demoState.uploads[0]?.error);
  const first = await a.evaluate(() => window.demoState.uploads[0]);
  say(`UPLOADED ${first.name} instant=${first.instant} progress=${first.progressEvents > 0 && first.progress === 1} error=${first.error ?? "none"}`);

  await until(b, "the thumbnail", () =>
    [...document.querySelectorAll("#chat-log img.thumb")].some((img) => img.complete && img.naturalWidth > 0),
  );
  const entry = await b.evaluate(() => {
    const c = window.demoState.chat.find((c) => c.file);
    return `${c.name}:${c.file.name}:${c.file.mime}:${c.file.size > 500000}`;
  });
  say(`THUMBNAIL ${entry} ${(await thumbnails(b)).join(",")}`);
  await b.screenshot({ path: join(shots, "files-b.png") });

  await b.reload();
  await until(b, "the page to load history again", () => window.demoState?.ready);
  await until(b, "the thumbnail from history", () =>
    [...document.querySelectorAll("#chat-log img.thumb")].some((img) => img.complete && img.naturalWidth > 0),
  );
  say(`HISTORY ${(await thumbnails(b)).join(",")}`);

  await give(a, "paste");
  await until(a, "the second upload", () => window.demoState.uploads[1]?.done || window.demoState.uploads[1]?.error);
  const second = await a.evaluate(() => window.demoState.uploads[1]);
  say(`UPLOADED AGAIN instant=${second.instant} error=${second.error ?? "none"}`);
  await until(b, "two thumbnails", () =>
    [...document.querySelectorAll("#chat-log img.thumb")].filter((img) => img.complete && img.naturalWidth > 0).length === 2,
  );
  say(`THUMBNAILS ${(await thumbnails(b)).join(",")}`);
  say("DONE");
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
