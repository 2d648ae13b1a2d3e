// The serial page's client: Debian's term.js on the page's console websocket (binary messages of UTF-8).
import { socketUrl, status } from "/console.js";

const term = new Terminal({ cols: 100, rows: 30, useStyle: true, screenKeys: false, cursorBlink: false });
term.open(document.getElementById("terminal"));
const ws = new WebSocket(socketUrl(), ["binary"]);
ws.binaryType = "arraybuffer";
const decoder = new TextDecoder();
const encoder = new TextEncoder();
ws.onopen = () => { status("connected", "connected"); term.focus(); };
ws.onmessage = (e) => term.write(decoder.decode(e.data, { stream: true }));
ws.onclose = (e) => status(`closed (${e.code}) ${e.reason}`, "disconnected");
term.on("data", (data) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
window.term = term;
