// spice-html5 0.3.0 (Debian's) sends a channel's RSA-encrypted ticket as the number's bytes without its
// leading zero bytes (jsbn's toString(16)), then pads the 128-byte field with zeros on the right. When the
// ciphertext's first byte is 0 (about one channel link in 200) the server reads a number larger than its
// modulus, cannot decrypt it and closes that channel: the page never connects (main channel) or stays
// without a screen (display channel). Importing this module makes every ticket its full size, as RSA
// (RFC 8017 I2OSP) and the server expect.
import { SpiceConn } from "/spice-html5/spiceconn.js";
import { Constants } from "/spice-html5/enums.js";

function fullTicket(ticket) {
  const size = Constants.SPICE_TICKET_KEY_PAIR_LENGTH / 8;
  return ticket && ticket.length < size ? new Array(size - ticket.length).fill(0).concat(ticket) : ticket;
}

const sendTicket = SpiceConn.prototype.send_ticket;
SpiceConn.prototype.send_ticket = function (ticket) {
  return sendTicket.call(this, fullTicket(ticket));
};
