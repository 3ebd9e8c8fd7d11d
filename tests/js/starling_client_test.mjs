// web/starling-client.js against the real broker (tests/js_client.rs drives it).
// Usage: node starling_client_test.mjs ws://127.0.0.1:PORT/ws SCENARIO
// One line per step on stdout, checked by the Rust side, which answers on
// stdin when it has done its part. Exit status 0 when every step passed, 1
// (with the reason on stderr) otherwise.
import readline from "node:readline";
import WebSocket, { WebSocketServer } from "ws";
import { StarlingClient } from "../../web/starling-client.js";
import { starling } from "../../web/starling_pb.js";

const { Frame } = starling.v1;
const [url, scenario] = process.argv.slice(2);
const fail = (why) => {
  console.error(`starling_client_test ${scenario}: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 20000).unref();
const say = (line) => console.log(line);
const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const hear = async (expected) => {
  const { value } = await stdin.next();
  if (value !== expected) fail(`expected "${expected}" on stdin, got "${value}"`);
};
/** Waits for a condition that no event announces (counts kept by the spy); bounded by the global timeout. */
const until = async (cond) => {
  while (!cond()) await new Promise((resolve) => setTimeout(resolve, 10));
};
const check = (cond, what) => cond || fail(what);

/** Counts what crosses the WebSocket and can hold back the client's PubAcks. */
const spy = { heartbeatsOut: 0, heartbeatsIn: 0, holdAcks: false, heldAcks: 0, publishesIn: [], sockets: [] };
class SpyWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    spy.sockets.push(this);
    this.on("message", (data) => {
      const bytes = new Uint8Array(data);
      if (bytes.length === 1) spy.heartbeatsIn++;
      else if (Frame.decode(bytes).publish) spy.publishesIn.push(Frame.decode(bytes).publish);
    });
  }
  send(data) {
    if (data.length === 1) spy.heartbeatsOut++;
    else if (spy.holdAcks && Frame.decode(data).pubAck) return void spy.heldAcks++;
    super.send(data);
  }
}

/** Messages as an async queue: `await next()`. */
const inbox = (client) => {
  const queue = [];
  const waiting = [];
  client.on("message", (m) => (waiting.length ? waiting.shift()(m) : queue.push(m)));
  return () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve) => waiting.push(resolve)));
};
const once = (client, event) => new Promise((resolve) => client.on(event, resolve));
const options = { WebSocket: SpyWebSocket };

const scenarios = {
  async interop() {
    const c = await StarlingClient.connect(url, {
      ...options,
      clientId: "js-1",
      cleanStart: true,
      sessionExpirySecs: 300,
      heartbeatSecs: 7200,
    });
    say(`CONNACK ${c.clientId} ${c.sessionPresent} ${c.heartbeatSecs} ${c.maxFrameSize}`);
    const auto = await StarlingClient.connect(url, options);
    say(`ASSIGNED ${auto.clientId}`);
    await auto.disconnect();

    const next = inbox(c);
    const errors = [];
    c.on("error", (e) => errors.push(e));
    const results = await c.subscribe([{ filter: "js/to-js/#", qos: 1 }, "js/q0", { filter: "bad/#/x", qos: 1 }]);
    say(`SUBACK ${results.join(",")}`);
    const retained = await next();
    say(`RETAINED ${retained.topic} ${retained.text()} ${retained.retain}`);

    await c.publish("js/from-js/zero", "zero");
    say(`PUBACK ${await c.publish("js/from-js/one", new TextEncoder().encode("one"), { qos: 1 })}`);
    say(`PUBACK ${await c.publish("js/retained", "kept", { qos: 1, retain: true })}`);
    const refused = await c.publish("bad/+/topic", "x", { qos: 1 }).then(() => fail("accepted"), (e) => e.code);
    await c.publish("bad/#", "x"); // QoS 0: answered with Error{0x90}, the connection stays open
    const history = await c.history("js/to-js/one", { afterMessageId: 2n ** 63n }).catch((e) => e.code);
    say(`REFUSED ${refused} ERROR ${errors.map((e) => e.code)} HISTORY ${history} OPEN ${c.connected}`);
    say("READY");

    const got = [await next(), await next()].map((m) => `${m.topic} ${m.qos} ${m.text()} ${m.retain} ${m.dup}`);
    say(`GOT ${got.sort().join(" | ")}`);
    check(typeof retained.messageId === "bigint" && retained.timestampMs > 1.7e12, "message id and timestamp");
    say(`UNSUBACK ${await c.unsubscribe(["js/q0", "never/subscribed", "bad/#/x"])}`);
    await c.disconnect();
    check(!c.connected, "still connected after disconnect()");
  },

  async resume() {
    const c = await StarlingClient.connect(url, {
      ...options,
      clientId: "js-resume",
      sessionExpirySecs: 300,
      backoffMs: 50,
    });
    const handled = [];
    c.on("message", (m) => handled.push(m));
    const next = inbox(c);
    await c.subscribe({ filter: "resume/#", qos: 1 });
    spy.holdAcks = true;
    say("READY");
    const m1 = await next();
    await until(() => spy.heldAcks === 1); // handled, its PubAck lost with the connection
    await c.disconnect();
    spy.holdAcks = false;
    say(`AWAY ${m1.topic} ${m1.text()}`);

    await hear("BACK");
    await c.reconnect();
    const [m2, m3] = [await next(), await next()];
    say(`RESUMED ${c.sessionPresent} ${m2.text()} ${m3.text()} ${m2.dup} ${m3.dup}`);
    const redelivered = spy.publishesIn.filter((p) => p.dup);
    check(redelivered.length === 1 && redelivered[0].topic === "resume/a", "m1 redelivered once with dup");
    // Consecutive ids prove the 64-bit message ids arrive exactly (they exceed 2^53).
    check(m1.messageId > 2n ** 53n && m3.messageId - m1.messageId === 2n, `ids ${m1.messageId} ${m3.messageId}`);
    say(`DEDUPED handled=${handled.map((m) => m.text())} redelivered=${redelivered.length}`);

    // A lost network: the client reconnects by itself and sends what it published meanwhile.
    const disconnected = once(c, "disconnect");
    const reconnected = once(c, "connect");
    spy.sockets.at(-1).terminate();
    const lost = await disconnected;
    const offline = c.publish("from-js/resume", "while away", { qos: 1 });
    const back = await reconnected;
    say(`RECONNECTED ${lost.willReconnect} ${back.sessionPresent} ${back.reconnected} ${await offline}`);
    const m4 = await next();
    say(`GOT ${m4.topic} ${m4.text()}`);
    await c.disconnect();
  },

  async heartbeat() {
    const c = await StarlingClient.connect(url, { ...options, clientId: "js-hb", heartbeatSecs: 1 });
    let lost = null;
    c.on("disconnect", (d) => (lost = d));
    // Idle: heartbeats go out after 1 s of silence and are answered; the server keeps the connection.
    await until(() => spy.heartbeatsOut >= 2 && spy.heartbeatsIn >= 2);
    // Busy sending (QoS 0, nothing comes back): heartbeats still go out, as the client hears nothing.
    const before = spy.heartbeatsOut;
    const start = Date.now();
    while (Date.now() - start < 2500) {
      await c.publish("hb/nobody", "tick");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    check(spy.heartbeatsOut > before, "no heartbeat while sending without hearing anything");
    check(!lost && c.connected, `connection lost: ${JSON.stringify(lost)}`);
    say(`HEARTBEATS ${c.heartbeatSecs} ${spy.heartbeatsIn >= 2} ${c.connected}`);
    await c.disconnect();

    // Liveness: a fake server that never answers heartbeats. The client gives
    // up after 1.5 intervals of silence and reconnects by itself.
    const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: () => "starling.v1" });
    await once(wss, "listening");
    let connections = 0;
    wss.on("connection", (ws) => {
      connections++;
      ws.once("message", () => {
        const connAck = { clientId: "fake", heartbeatSecs: 1, maxFrameSize: 1024 };
        ws.send(Frame.encode({ connAck }).finish());
      });
    });
    const fake = await StarlingClient.connect(`ws://127.0.0.1:${wss.address().port}/ws`, {
      WebSocket,
      heartbeatSecs: 1,
      backoffMs: 50,
    });
    const opened = Date.now();
    const [dead, again] = [once(fake, "disconnect"), once(fake, "connect")];
    const d = await dead;
    const after = Date.now() - opened;
    check(after >= 1400 && after < 3000, `declared dead after ${after} ms`);
    await again;
    say(`LIVENESS ${d.reason} ${d.willReconnect} ${connections}`);
    await fake.disconnect();
    wss.close();
  },

  async refusals() {
    const bad = await StarlingClient.connect(url, { ...options, will: { topic: "will/+", payload: "x" } }).then(
      () => fail("a will with a wildcard was accepted"),
      (e) => e,
    );
    const path = await StarlingClient.connect(url.replace(/\/ws$/, "/nope"), options).then(
      () => fail("connected to /nope"),
      (e) => e.message,
    );
    say(`CONNECT-REFUSED ${bad.code} ${bad.refused} ${path.includes("connection closed")}`);

    const twin = await StarlingClient.connect(url, { ...options, clientId: "js-twin" });
    const taken = once(twin, "disconnect");
    const other = await StarlingClient.connect(url, { ...options, clientId: "js-twin" });
    const t = await taken;
    say(`TAKEN-OVER ${t.reasonCode} ${t.reconnect} ${t.willReconnect} ${twin.connected}`);
    const big = await other.publish("t", new Uint8Array(other.maxFrameSize + 1), { qos: 1 }).catch((e) => e.code);
    say(`TOO-LARGE ${big}`);
    await other.disconnect();

    const willing = await StarlingClient.connect(url, { ...options, will: { topic: "will/js", payload: "gone" } });
    await willing.disconnect({ will: true });
    say("WILL");
  },
};

if (!scenarios[scenario]) fail(`unknown scenario ${scenario}`);
await scenarios[scenario]();
say("DONE");
process.exit(0);
