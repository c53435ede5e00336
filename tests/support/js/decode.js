// Decode Sparkplug B payloads with Eclipse Tahu's sparkplug-payload package:
// stdin holds one base64 payload per line, stdout one JSON object per line.
// 64-bit integers (protobufjs Long) are printed as decimal strings so that no
// precision is lost on the way back to Python.
"use strict";
const { decodePayload } = require("sparkplug-payload").get("spBv1.0");
// a protobufjs Long, recognised by shape (the "long" package is only a dependency of a dependency)
const isLong = (v) => v !== null && typeof v === "object" && "low" in v && "high" in v && "unsigned" in v;

function plain(value) {
  if (isLong(value)) return value.toString();
  if (Array.isArray(value)) return value.map(plain);
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [key, inner] of Object.entries(value)) out[key] = plain(inner);
    return out;
  }
  return value;
}

const lines = require("fs").readFileSync(0, "utf8").split("\n").filter((l) => l.trim());
for (const line of lines) {
  const decoded = decodePayload(Buffer.from(line.trim(), "base64"));
  process.stdout.write(JSON.stringify(plain(decoded)) + "\n");
}
