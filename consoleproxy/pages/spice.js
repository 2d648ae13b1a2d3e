// The SPICE page's client: Debian's spice-html5 on the page's console websocket, its tickets mended.
import * as SpiceHtml5 from "/spice-html5/main.js";
import "/spice-ticket.js";
import { socketUrl, status } from "/console.js";

window.spice = new SpiceHtml5.SpiceMainConn({
  uri: socketUrl(), screen_id: "spice-screen",
  onsuccess: () => status("connected", "connected"),
  onerror: (e) => status(`closed: ${e}`, "disconnected"),
});
