// The process logger: JSON lines for log collectors, pino-pretty when a person reads a terminal;
// credentials never reach either.
import { pino, type Logger } from "pino";
import PinoPretty from "pino-pretty";
import type { Config } from "./config.js";

/** Headers that carry credentials, wherever a request or its headers are logged. */
export const REDACTED_PATHS = [
  "req.headers.authorization", 'req.headers["x-api-key"]', "req.headers.cookie",
  "headers.authorization", 'headers["x-api-key"]', "headers.cookie",
];

export function usePrettyLogs(format: Config["logFormat"], stdoutIsTty = process.stdout.isTTY === true): boolean {
  return format === "pretty" || (format === "auto" && stdoutIsTty);
}

export function createLogger(config: Pick<Config, "logLevel" | "logFormat">): Logger {
  const options = { level: config.logLevel, redact: { paths: REDACTED_PATHS, censor: "[redacted]" } };
  if (!usePrettyLogs(config.logFormat)) return pino(options);
  // In-thread pretty stream (not a worker transport): lines are never lost when the process exits.
  return pino(options, PinoPretty({ colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", sync: true }));
}
