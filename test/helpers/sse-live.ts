// Reads server-sent events as they arrive (the stream is still open while the test acts on it).
export type LiveEvent = { event: string; data: string };

/** Yields each event when its blank line arrives; ends when the server closes, throws if it cuts the socket. */
export async function* liveEvents(response: Response): AsyncGenerator<LiveEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      yield { event, data: data.join("\n") };
    }
  }
}

/**
 * Collects a stream's events in the background; `first` resolves at the first event named `firstOf`
 * (a token), `ended` when the stream closes (`cut` true when the socket died instead of ending).
 */
export function collectEvents(response: Response, firstOf: (e: LiveEvent) => boolean) {
  const events: LiveEvent[] = [];
  let markFirst!: () => void;
  const first = new Promise<void>((resolve) => { markFirst = resolve; });
  const ended = (async () => {
    try {
      for await (const e of liveEvents(response)) {
        events.push(e);
        if (firstOf(e)) markFirst();
      }
      return { cut: false };
    } catch {
      return { cut: true };
    } finally {
      markFirst();
    }
  })();
  return { events, first, ended };
}
