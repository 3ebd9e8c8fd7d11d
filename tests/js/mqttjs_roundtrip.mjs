// MQTT.js connects to URL (ws:// or wss://), subscribes, publishes to itself
// and prints "OK <payload>" when its message comes back; exit 1 otherwise.
// Usage: node mqttjs_roundtrip.mjs URL [PASSWORD]
// For wss:// the test passes its CA in NODE_EXTRA_CA_CERTS.
import mqtt from "mqtt";

const [url, password] = process.argv.slice(2);
const fail = (why) => {
  console.error(`mqttjs_roundtrip: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 8000).unref();
const client = mqtt.connect(url, {
  protocolVersion: 5,
  clientId: "mqttjs-roundtrip",
  reconnectPeriod: 0,
  ...(password && { username: "", password }),
});
client.on("error", (e) => fail(`client error: ${e.message}`));
client.on("message", (_topic, message) => {
  console.log(`OK ${new TextDecoder().decode(message)}`);
  // Done: the server may close its side while MQTT.js is still saying
  // goodbye (EPIPE); that is not a failure of the round trip.
  client.removeAllListeners("error");
  client.on("error", () => {});
  client.end(false, {}, () => process.exit(0));
});
client.on("connect", () => {
  client.subscribe("js/roundtrip", { qos: 1 }, (err) => {
    if (err) fail(`subscribe: ${err.message}`);
    client.publish("js/roundtrip", "over tls", { qos: 1 });
  });
});
