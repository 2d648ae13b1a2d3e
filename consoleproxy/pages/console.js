// What every console page shares: the status line (and body[data-state], which tests read) and the
// URL of the page's console websocket (this page's path + "/ws", the same token).
export function status(text, state) {
  document.getElementById("status").textContent = text;
  document.body.dataset.state = state;
}

export function socketUrl() {
  const url = new URL(location.pathname + "/ws" + location.search, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}
