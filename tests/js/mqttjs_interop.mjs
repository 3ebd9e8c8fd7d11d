// MQTT.js against starling's MQTT-over-WebSocket endpoint.
// Usage: node mqttjs_interop.mjs ws://127.0.0.1:PORT/mqtt PROTOCOL_VERSION
// Protocol with the Rust side (tests/mqttjs.rs), one line each on stdout:
//   READY                      subscribed to js/to-js; Rust may publish now
//   GOT <topic> <payload>      a message arrived
//   RETAINED <topic> <payload> the retained message arrived on a fresh subscription
// Exit status 0 when everything expected happened, 1 (with a reason on stderr) otherwise.
import mqtt from "mqtt";

const [url, version] = process.argv.slice(2);
const protocolVersion = Number(version);
const fail = (why) => {
  console.error(`mqttjs: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 8000).unref();

const once = (client, event) => new Promise((resolve) => client.once(event, (...args) => resolve(args)));

const client = mqtt.connect(url, { protocolVersion, clientId: `mqttjs-${version}`, clean: true, reconnectPeriod: 0 });
client.on("error", (e) => fail(`client error: ${e.message}`));
await once(client, "connect");

await client.subscribeAsync("js/to-js", { qos: 2 });
// Publish at every QoS towards the Rust subscriber, and one retained message.
await client.publishAsync("js/from-js", "qos0", { qos: 0 });
await client.publishAsync("js/from-js", "qos1", { qos: 1 });
await client.publishAsync("js/from-js", "qos2", { qos: 2 });
await client.publishAsync(`js/retained/${version}`, "kept", { qos: 1, retain: true });

const got = once(client, "message");
console.log("READY");
const [topic, payload] = await got;
console.log(`GOT ${topic} ${payload.toString()}`);

// A second client sees the retained message at once.
const second = mqtt.connect(url, { protocolVersion, clientId: `mqttjs-${version}-b`, reconnectPeriod: 0 });
second.on("error", (e) => fail(`second client error: ${e.message}`));
await once(second, "connect");
const retained = once(second, "message");
await second.subscribeAsync(`js/retained/${version}`, { qos: 1 });
const [rtopic, rpayload, packet] = await retained;
if (!packet.retain) fail("retained message arrived without the retain flag");
console.log(`RETAINED ${rtopic} ${rpayload.toString()}`);

await client.endAsync();
await second.endAsync();
process.exit(0);
