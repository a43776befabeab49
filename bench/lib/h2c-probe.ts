// A bare Fastify server (this project's Fastify, no model) answering a POST with a JSON body of an embedding
// response's size, over HTTP/1.1 or over HTTP/2 without TLS (h2c, `http2: true`): what the transport alone
// costs, for bench/http-overhead.ts.   node --import tsx bench/lib/h2c-probe.ts h1|h2c PORT
import Fastify, { type FastifyInstance } from "fastify";

const [mode, port] = [process.argv[2], Number(process.argv[3])];
// 384 floats, as /api/llm/embed returns for one MiniLM text.
const vector = Array.from({ length: 384 }, (_, i) => Math.sin(i) / 20);
const routes = async (app: FastifyInstance) => {
  app.post("/api/llm/embed", async () => ({ embeddings: [vector], dim: 384, model: "probe" }));
};
// The two instance types differ only in their server; the probe uses what both have.
const app = (mode === "h2c" ? Fastify({ http2: true }) : Fastify()) as unknown as FastifyInstance;
await app.register(routes);
await app.listen({ port, host: "127.0.0.1" });
