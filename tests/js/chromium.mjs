// Headless Chromium for the browser tests (browser_demo_test.mjs,
// files_demo_test.mjs, status_page_test.mjs): Debian's /usr/bin/chromium
// driven by playwright-core, a throw-away profile, and a wait helper that
// names what it waited for. Every wait is a playwright wait with a timeout
// on what the page shows, never a sleep.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const TIMEOUT = 10_000;

/** Waits until `fn(arg)` is truthy in the page; fails naming `what`. */
export async function until(page, what, fn, arg, timeout = TIMEOUT) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 50 })).jsonValue();
  } catch (e) {
    throw new Error(`${page.name}: timed out waiting for ${what}: ${e.message.split("\n")[0]}`);
  }
}

/** A browser with a fresh profile; `close()` removes the profile too. */
export async function launch({ width = 1400, height = 700 } = {}) {
  const profile = mkdtempSync(join(tmpdir(), "starling-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width, height },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

/** A new page named `name` (in errors and logs) that reports its errors on stderr. */
export async function newPage(context, name) {
  const page = await context.newPage();
  page.name = name;
  page.on("pageerror", (e) => console.error(`${name}: page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && console.error(`${name}: console: ${m.text()}`));
  return page;
}
