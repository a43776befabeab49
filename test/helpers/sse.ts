// A small server-sent-events reader over a real HTTP response (fetch), keeping raw bytes so tests
// can check that no event splits a UTF-8 character.
export type SseEvent = { event: string; data: string };

export async function readSse(response: Response): Promise<{ events: SseEvent[]; raw: Buffer }> {
  const chunks: Buffer[] = [];
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(chunk));
  const raw = Buffer.concat(chunks);
  const events: SseEvent[] = [];
  for (const block of raw.toString("utf8").split("\n\n")) {
    if (block.trim() === "") continue;
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    events.push({ event, data: data.join("\n") });
  }
  return { events, raw };
}

/** True when every `data:` payload decodes as strict UTF-8 and holds no replacement character. */
export function everyEventIsWholeUtf8(raw: Buffer): boolean {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const text = decoder.decode(raw);
  return !text.includes("\uFFFD") && !/\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])/i.test(text);
}
