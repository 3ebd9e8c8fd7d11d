// The admin status page (web/status/) in headless Chromium:
// `node status_page_test.mjs URL SHOT_DIR EXPECTED_CONNECTIONS TOPIC`,
// URL being the admin listener's root.
//
// Prints one line per step. Every wait is a playwright wait with a timeout on
// what the page shows (`window.statusState`, the DOM), never a sleep. Exits 1
// with the error on stderr when a step fails. Needs Debian's chromium
// (/usr/bin/chromium) and playwright-core, like browser_demo_test.mjs.
import { join } from "node:path";
import { launch, newPage, until } from "./chromium.mjs";

const [url, shots, expectedArg, topic] = process.argv.slice(2);
const expected = Number(expectedArg);
if (!url || !shots || !Number.isInteger(expected) || !topic) {
  console.error("usage: node status_page_test.mjs URL SHOT_DIR EXPECTED_CONNECTIONS TOPIC");
  process.exit(1);
}
// The rates need three polls a second apart, the canary its first round.
const SLOW_TIMEOUT = 30_000;
const say = (line) => console.log(line);

let browser;
let status = 0;
try {
  browser = await launch({ width: 1400, height: 900 });
  const page = await newPage(browser.context, "status");

  await page.goto(url);
  await until(page, "the first successful poll", () => window.statusState?.ready);
  say("READY");

  const { connections } = await until(
    page,
    `at least ${expected} connections`,
    (expected) => {
      const n = Number(document.getElementById("connections-total").textContent);
      return n >= expected && { connections: n };
    },
    expected,
  );
  say(`CONNECTIONS ${connections}`);

  await until(
    page,
    `${topic} among the top topics`,
    (topic) => document.getElementById("top-topics").textContent.includes(topic),
    topic,
  );
  say(`TOPIC ${topic}`);

  const rate = await until(
    page,
    "a received rate above zero",
    () => {
      const received = window.statusState.rates.received;
      return received.length >= 2 && received.some((r) => r > 0) && Math.max(...received);
    },
    undefined,
    SLOW_TIMEOUT,
  );
  say(`RATE ${Math.round(rate)}`);

  const canary = await until(
    page,
    "the mqtt listener's canary result",
    () => {
      // innerText separates the table cells, textContent would run them together.
      const text = document.getElementById("canary").innerText.replace(/\s+/g, " ").trim();
      return text.includes("mqtt") && text;
    },
    undefined,
    SLOW_TIMEOUT,
  );
  say(`CANARY ${canary}`);

  await page.screenshot({ path: join(shots, "status.png"), fullPage: true });
  say("DONE");
} catch (e) {
  console.error(e?.stack ?? String(e));
  status = 1;
} finally {
  await browser?.close().catch(() => {});
}
process.exit(status);
