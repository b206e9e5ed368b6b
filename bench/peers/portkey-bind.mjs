// Preloaded into Portkey's gateway (`node --import`): its start script calls serve({fetch, port})
// with no hostname, which binds every interface. This forces every listen() onto 127.0.0.1.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number") {
    const cb = typeof args[args.length - 1] === "function" ? args[args.length - 1] : undefined;
    return listen.call(this, { port: args[0], host: "127.0.0.1" }, cb);
  }
  if (args[0] && typeof args[0] === "object" && "port" in args[0]) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
