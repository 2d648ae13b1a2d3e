// The VNC page's client: Debian's noVNC on the page's console websocket.
import RFB from "/novnc/core/rfb.js";
import { socketUrl, status } from "/console.js";

const rfb = new RFB(document.getElementById("screen"), socketUrl(), { wsProtocols: ["binary"] });
rfb.scaleViewport = false;
rfb.resizeSession = false;
rfb.addEventListener("connect", () => { status("connected", "connected"); rfb.focus(); });
rfb.addEventListener("disconnect", (e) => status(e.detail.clean ? "disconnected" : "connection lost", "disconnected"));
rfb.addEventListener("desktopname", (e) => { document.title = e.detail.name; });
window.rfb = rfb;
