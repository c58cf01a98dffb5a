// Serves on the socket sockhold passes at fd 3; stops on SIGTERM once its
// in-flight requests are answered (without the handler node would die at
// once, dropping them).
const http = require("http");
const server = http.createServer((req, res) => {
  res.end("node " + process.pid + "\n");
});
server.listen({ fd: 3 });
process.on("SIGTERM", () => server.close(() => process.exit(0)));
