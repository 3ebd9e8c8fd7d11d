// JavaScript clients with credentials against the real broker (tests/auth_js.rs):
// MQTT.js over /mqtt with a signed token as the MQTT password, and
// web/starling-client.js over /ws with the token in Connect.token.
// Usage: node auth_clients.mjs MQTT_WS_URL PROTO_WS_URL GOOD_TOKEN BAD_TOKEN
// One line per client on stdout:
//   MQTTJS OK <payload>        connected with the token, got its own message back
//   MQTTJS REFUSED <code>      the bad token's CONNACK reason code
//   STARLING OK <payload>
//   STARLING REFUSED <code>
// Exit status 0 when all four lines were printed, 1 (with a reason on stderr) otherwise.
import mqtt from "mqtt";
import WebSocket from "ws";
import { StarlingClient } from "../../web/starling-client.js";

const [mqttUrl, protoUrl, good, bad] = process.argv.slice(2);
const fail = (why) => {
  console.error(`auth_clients: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 8000).unref();

// MQTT.js, MQTT 5, the token as password (empty username).
const mqttRoundTrip = (password) =>
  new Promise((resolve, reject) => {
    const client = mqtt.connect(mqttUrl, {
      protocolVersion: 5,
      clientId: `mqttjs-${password === good ? "good" : "bad"}`,
      username: "",
      password,
      reconnectPeriod: 0,
    });
    client.on("error", (e) => {
      client.end(true);
      reject(e);
    });
    client.on("message", (_topic, message) => {
      client.end();
      resolve(new TextDecoder().decode(message));
    });
    client.on("connect", () => {
      client.subscribe("js/auth/mqttjs", { qos: 1 }, (err) => {
        if (err) return reject(err);
        client.publish("js/auth/mqttjs", "hello with a token", { qos: 1 });
      });
    });
  });

console.log(`MQTTJS OK ${await mqttRoundTrip(good)}`);
try {
  await mqttRoundTrip(bad);
  fail("MQTT.js connected with a bad token");
} catch (e) {
  console.log(`MQTTJS REFUSED ${e.code}`);
}

// The starling.v1 JavaScript client.
const client = await StarlingClient.connect(protoUrl, { clientId: "js-good", token: good, reconnect: false, WebSocket });
const got = new Promise((resolve) => client.on("message", (m) => resolve(m.text())));
await client.subscribe([{ filter: "js/auth/starling", qos: 1 }]);
await client.publish("js/auth/starling", "hello from starling-client", { qos: 1 });
console.log(`STARLING OK ${await got}`);
await client.disconnect();
try {
  await StarlingClient.connect(protoUrl, { clientId: "js-bad", token: bad, reconnect: false, WebSocket });
  fail("starling-client connected with a bad token");
} catch (e) {
  console.log(`STARLING REFUSED ${e.code}`);
}
process.exit(0);
