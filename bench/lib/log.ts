// Progress lines on stderr (the table goes to stdout), stamped with the time since the bench started.
const started = performance.now();

export function progress(message: string): void {
  const s = Math.floor((performance.now() - started) / 1000);
  const stamp = `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  process.stderr.write(`[bench ${stamp}] ${message}\n`);
}

export function elapsedSeconds(): number {
  return (performance.now() - started) / 1000;
}
