// The web demo (web/demo/) in headless Chromium, driven by tests/browser.rs:
// `node browser_demo_test.mjs http://127.0.0.1:PORT/ SCREENSHOT_DIR`.
//
// Prints one line per step; waits for a line on stdin where the Rust side has
// something to do (publish over MQTT). Every wait is a playwright wait with a
// timeout on what the page shows (`window.demoState`, the DOM), never a sleep.
// Needs Debian's chromium (/usr/bin/chromium) and playwright-core; the test
// command installs both.
import { join } from "node:path";
import { launch, newPage, until } from "./chromium.mjs";
import { createInterface } from "node:readline";

const [url, shots] = process.argv.slice(2);
const input = createInterface({ input: process.stdin });
const stdin = input[Symbol.asyncIterator]();
const say = (line) => console.log(line);
async function hear(expected) {
  const { value } = await stdin.next();
  if (value !== expected) throw new Error(`expected ${expected} on stdin, got ${value}`);
}

const chatLines = (page) =>
  page.evaluate(() => window.demoState.chat.map((c) => `${c.name}:${c.text}`).join("|"));

const browser = await launch();

async function open(name) {
  const page = await newPage(browser.context, name);
  await page.goto(url);
  await until(page, "the page to connect, subscribe and load history", () => window.demoState?.ready);
  return page;
}

try {
  // Two viewers of the same demo.
  const a = await open("A");
  const b = await open("B");
  say(`READY ${await a.evaluate(() => window.demoState.connected)} ${await b.evaluate(() => window.demoState.connected)}`);

  // Chat: A sends, B sees it live (its history was loaded before).
  await a.fill("#chat-name", "ada");
  for (const text of ["hello from A", "anyone watching the stream?"]) {
    await a.fill("#chat-input", text);
    await a.press("#chat-input", "Enter");
  }
  await until(b, "A's chat messages", () => window.demoState.chat.length >= 2);
  say(`CHAT LIVE ${await chatLines(b)}`);

  // The Rust side publishes a chat message and vehicles over MQTT.
  await hear("PUBLISHED");
  await until(b, "the MQTT chat message", () => window.demoState.chat.some((c) => c.name === "rust"));
  const wanted = { "car-1": { x: 0.25, y: 0.5 }, "car-2": { x: 0.75, y: 0.125 }, "car-3": { x: 0, y: 1 } };
  const map = (page) =>
    until(
      page,
      "the vehicles published over MQTT",
      (wanted) =>
        Object.entries(wanted).every(([id, p]) => {
          const v = window.demoState.vehicles[id];
          return v && v.x === p.x && v.y === p.y;
        }) && Number(document.getElementById("vehicle-count").textContent) >= 3,
      wanted,
    );
  await map(b);
  say("MAP LIVE 3");

  // A third viewer, arriving late: the chat from history, the vehicles from retained messages.
  const c = await open("C");
  say(`HISTORY ${await chatLines(c)}`);
  await c.fill("#chat-name", "cy");
  await c.fill("#chat-input", "joined late, read the history");
  await c.press("#chat-input", "Enter");
  await until(a, "C's chat message", () => window.demoState.chat.some((c) => c.name === "cy"));
  say(`CHAT LATE ${(await chatLines(a)).split("|").at(-1)}`);
  await map(c);
  say("MAP RETAINED 3");
  await until(b, "three viewers counted", () => window.demoState.viewers === 3);
  say(`VIEWERS ${await b.evaluate(() => document.getElementById("viewers").textContent)}`);

  // Danmaku: a comment from A flies over B's video.
  await a.fill("#danmaku-input", "first!");
  await a.press("#danmaku-input", "Enter");
  await until(b, "A's comment in the overlay", () =>
    [...document.querySelectorAll("#danmaku .comment")].some((e) => e.textContent === "first!"),
  );
  say("DANMAKU first!");

  // Over the rate limit (2 a second, 5 at once): A is told politely. Each
  // comment of the burst is either refused (Error 0x96) or delivered, to A too.
  const burst = ["so good", "wow", "hello from ada", "666", "encore", "more", "again", "too fast?"];
  await a.evaluate((burst) => {
    for (const text of burst) {
      document.getElementById("danmaku-input").value = text;
      document.getElementById("danmaku-form").requestSubmit();
    }
  }, burst);
  const outcome = await until(
    a,
    "every comment of the burst refused or delivered",
    (burst) => {
      const refused = window.demoState.notices.filter((n) => n.code === 0x96).length;
      const delivered = window.demoState.danmaku.filter((t) => burst.includes(t)).length;
      const shown = document.getElementById("danmaku-notice").textContent;
      return refused + delivered === burst.length && shown && { refused, delivered, shown };
    },
    burst,
  );
  say(`RATE LIMITED refused=${outcome.refused} delivered=${outcome.delivered} polite=${outcome.shown.startsWith("Easy there!")}`);

  // The page's own fleet simulator: twelve vehicles appear on every map.
  await a.click("#simulate");
  await until(b, "the simulated fleet", () =>
    Object.keys(window.demoState.vehicles).filter((id) => id.startsWith("web-")).length === 12,
  );
  say(`SIMULATED ${await b.evaluate(() => Object.keys(window.demoState.vehicles).length)}`);

  // For the screenshots: a comment from B in mid-flight over A's video.
  await b.fill("#danmaku-input", "what a stream");
  await b.press("#danmaku-input", "Enter");
  await until(a, "B's comment in the middle of the video", () => {
    const stage = document.getElementById("danmaku").getBoundingClientRect();
    const middle = stage.left + stage.width / 2;
    return [...document.querySelectorAll("#danmaku .comment")].some(
      (e) => e.textContent === "what a stream" && e.getBoundingClientRect().left < middle,
    );
  });
  for (const [name, page] of [["a", a], ["b", b], ["c", c]]) {
    await page.screenshot({ path: join(shots, `demo-${name}.png`) });
  }
  say("DONE");
} finally {
  input.close();
  await browser.close();
}
