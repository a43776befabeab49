// The DT_NEEDED entries of an ELF64 little-endian shared object (what `readelf -d` lists as NEEDED), read
// with a few positioned reads: the CUDA binding's libraries are hundreds of MB, only headers are needed.
import { closeSync, openSync, readSync } from "node:fs";

function readAt(fd: number, offset: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const read = readSync(fd, buffer, 0, length, offset);
  if (read !== length) throw new Error(`short read at ${offset}`);
  return buffer;
}

export function neededLibraries(file: string): string[] {
  const fd = openSync(file, "r");
  try {
    const header = readAt(fd, 0, 64);
    if (header.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`);
    if (header[4] !== 2 || header[5] !== 1) throw new Error(`${file}: only ELF64 little-endian is read here`);
    const sectionsOffset = Number(header.readBigUInt64LE(0x28));
    const sectionSize = header.readUInt16LE(0x3a);
    const sectionCount = header.readUInt16LE(0x3c);
    const sections = Array.from({ length: sectionCount }, (_, i) => {
      const s = readAt(fd, sectionsOffset + i * sectionSize, 64);
      return { type: s.readUInt32LE(4), offset: Number(s.readBigUInt64LE(24)), size: Number(s.readBigUInt64LE(32)), link: s.readUInt32LE(40) };
    });
    const dynamic = sections.find((s) => s.type === 6 /* SHT_DYNAMIC */);
    if (dynamic === undefined) return [];
    const strings = sections[dynamic.link]!;
    const stringTable = readAt(fd, strings.offset, strings.size);
    const entries = readAt(fd, dynamic.offset, dynamic.size);
    const needed: string[] = [];
    for (let at = 0; at + 16 <= entries.length; at += 16) {
      const tag = entries.readBigInt64LE(at);
      if (tag === 0n /* DT_NULL */) break;
      if (tag === 1n /* DT_NEEDED */) {
        const start = Number(entries.readBigUInt64LE(at + 8));
        needed.push(stringTable.toString("utf8", start, stringTable.indexOf(0, start)));
      }
    }
    return needed;
  } finally {
    closeSync(fd);
  }
}
