// A minimal streaming GGUF v3 writer: KV metadata, tensor infos, then 32-byte-aligned tensor data that is
// produced chunk by chunk, so multi-GB files never sit in memory. Only F32 and F16 tensors are supported;
// that is all the synthetic test/bench models need (llama-quantize does the rest).
//
// Layout (gguf-py/gguf/constants.py, docs/): "GGUF" u32 version, u64 tensor_count, u64 kv_count,
// kv_count × (string key, u32 value type, value), tensor_count × (string name, u32 n_dims, u64 ne[n_dims]
// (ggml order: ne[0] is the contiguous row length), u32 ggml type, u64 offset relative to the data section),
// zero padding up to `general.alignment` (32), then the data of each tensor at its aligned offset.
import { open, rename, rm } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";

export const GGUF_ALIGNMENT = 32;
const GGUF_VERSION = 3;

/** GGUF metadata value types (gguf-py GGUFValueType). */
export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

export type GgufScalarType = Exclude<GgufValueType, GgufValueType.ARRAY>;
export type GgufScalar = string | number | bigint | boolean;

export type GgufKv =
  | { key: string; type: GgufScalarType; value: GgufScalar }
  | { key: string; type: GgufValueType.ARRAY; subType: GgufScalarType; value: readonly GgufScalar[] };

/** ggml tensor types used here (ggml.h enum ggml_type). */
export type TensorDtype = "F32" | "F16";
const GGML_TYPE_ID: Record<TensorDtype, number> = { F32: 0, F16: 1 };
const DTYPE_BYTES: Record<TensorDtype, number> = { F32: 4, F16: 2 };

/**
 * Fills `count` consecutive elements of a tensor into `out` (a Float32Array for F32 tensors, a Uint16Array of
 * IEEE half bit patterns for F16 tensors). Called with consecutive ranges from element 0 to the end, in order,
 * so stateful generators (a PRNG stream) can keep their state between calls.
 */
export type TensorFill = (out: Float32Array | Uint16Array) => void;

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the row length (e.g. token_embd is [n_embd, n_vocab]). */
  dims: readonly number[];
  dtype: TensorDtype;
  /** Creates a fresh filler; invoked once, right before the tensor's data is streamed. */
  makeFill: () => TensorFill;
}

export interface WriteProgress {
  written: number;
  total: number;
  tensor: string;
}

const pad = (n: number, align: number): number => Math.ceil(n / align) * align;

export function tensorElementCount(t: Pick<GgufTensor, "dims">): number {
  return t.dims.reduce((a, b) => a * b, 1);
}

export function tensorByteSize(t: Pick<GgufTensor, "dims" | "dtype">): number {
  return tensorElementCount(t) * DTYPE_BYTES[t.dtype];
}

/** Grows-on-demand little-endian byte sink for the header. */
class ByteSink {
  private buf = Buffer.alloc(1 << 20);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  u8(v: number): void { this.reserve(1); this.buf.writeUInt8(v, this.length); this.length += 1; }
  i8(v: number): void { this.reserve(1); this.buf.writeInt8(v, this.length); this.length += 1; }
  u16(v: number): void { this.reserve(2); this.buf.writeUInt16LE(v, this.length); this.length += 2; }
  i16(v: number): void { this.reserve(2); this.buf.writeInt16LE(v, this.length); this.length += 2; }
  u32(v: number): void { this.reserve(4); this.buf.writeUInt32LE(v, this.length); this.length += 4; }
  i32(v: number): void { this.reserve(4); this.buf.writeInt32LE(v, this.length); this.length += 4; }
  f32(v: number): void { this.reserve(4); this.buf.writeFloatLE(v, this.length); this.length += 4; }
  f64(v: number): void { this.reserve(8); this.buf.writeDoubleLE(v, this.length); this.length += 8; }
  u64(v: number | bigint): void { this.reserve(8); this.buf.writeBigUInt64LE(BigInt(v), this.length); this.length += 8; }
  i64(v: number | bigint): void { this.reserve(8); this.buf.writeBigInt64LE(BigInt(v), this.length); this.length += 8; }
  bytes(b: Uint8Array): void { this.reserve(b.length); this.buf.set(b, this.length); this.length += b.length; }
  str(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.bytes(b);
  }
  zeros(n: number): void { this.reserve(n); this.buf.fill(0, this.length, this.length + n); this.length += n; }
  result(): Buffer { return this.buf.subarray(0, this.length); }
}

function expect<T extends GgufScalar>(value: GgufScalar, kind: string, check: (v: GgufScalar) => v is T, key: string): T {
  if (!check(value)) throw new Error(`GGUF key ${key}: expected ${kind}, got ${typeof value}`);
  return value;
}
const isNum = (v: GgufScalar): v is number => typeof v === "number";
const isIntLike = (v: GgufScalar): v is number | bigint => typeof v === "number" || typeof v === "bigint";
const isStr = (v: GgufScalar): v is string => typeof v === "string";
const isBool = (v: GgufScalar): v is boolean => typeof v === "boolean";

function writeScalar(sink: ByteSink, type: GgufScalarType, v: GgufScalar, key: string): void {
  switch (type) {
    case GgufValueType.UINT8: sink.u8(expect(v, "number", isNum, key)); break;
    case GgufValueType.INT8: sink.i8(expect(v, "number", isNum, key)); break;
    case GgufValueType.UINT16: sink.u16(expect(v, "number", isNum, key)); break;
    case GgufValueType.INT16: sink.i16(expect(v, "number", isNum, key)); break;
    case GgufValueType.UINT32: sink.u32(expect(v, "number", isNum, key)); break;
    case GgufValueType.INT32: sink.i32(expect(v, "number", isNum, key)); break;
    case GgufValueType.FLOAT32: sink.f32(expect(v, "number", isNum, key)); break;
    case GgufValueType.FLOAT64: sink.f64(expect(v, "number", isNum, key)); break;
    case GgufValueType.UINT64: sink.u64(expect(v, "integer", isIntLike, key)); break;
    case GgufValueType.INT64: sink.i64(expect(v, "integer", isIntLike, key)); break;
    case GgufValueType.BOOL: sink.u8(expect(v, "boolean", isBool, key) ? 1 : 0); break;
    case GgufValueType.STRING: sink.str(expect(v, "string", isStr, key)); break;
  }
}

/** Serializes one KV pair exactly as it appears in a GGUF file (key string, type, value). */
export function encodeKv(kv: GgufKv): Buffer {
  const sink = new ByteSink();
  writeKv(sink, kv);
  return Buffer.from(sink.result());
}

function writeKv(sink: ByteSink, kv: GgufKv): void {
  sink.str(kv.key);
  sink.u32(kv.type);
  if (kv.type === GgufValueType.ARRAY) {
    sink.u32(kv.subType);
    sink.u64(kv.value.length);
    for (const v of kv.value) writeScalar(sink, kv.subType, v, kv.key);
  } else {
    writeScalar(sink, kv.type, kv.value, kv.key);
  }
}

interface PlannedTensor {
  tensor: GgufTensor;
  offset: number;
  bytes: number;
}

export interface GgufPlan {
  header: Buffer;
  tensors: PlannedTensor[];
  /** Total file size in bytes. */
  fileSize: number;
}

/** Builds the header (padded to the alignment) and computes every tensor's offset. */
export function planGguf(kvs: readonly GgufKv[], tensors: readonly GgufTensor[]): GgufPlan {
  const seen = new Set<string>();
  for (const kv of kvs) {
    if (seen.has(kv.key)) throw new Error(`duplicate GGUF key ${kv.key}`);
    seen.add(kv.key);
  }
  const sink = new ByteSink();
  sink.bytes(Buffer.from("GGUF", "ascii"));
  sink.u32(GGUF_VERSION);
  sink.u64(tensors.length);
  sink.u64(kvs.length);
  for (const kv of kvs) writeKv(sink, kv);

  const planned: PlannedTensor[] = [];
  let offset = 0;
  const names = new Set<string>();
  for (const tensor of tensors) {
    if (names.has(tensor.name)) throw new Error(`duplicate tensor ${tensor.name}`);
    names.add(tensor.name);
    if (tensor.dims.length < 1 || tensor.dims.length > 4 || tensor.dims.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new Error(`tensor ${tensor.name}: bad dims ${JSON.stringify(tensor.dims)}`);
    }
    offset = pad(offset, GGUF_ALIGNMENT);
    const bytes = tensorByteSize(tensor);
    planned.push({ tensor, offset, bytes });
    sink.str(tensor.name);
    sink.u32(tensor.dims.length);
    for (const d of tensor.dims) sink.u64(d);
    sink.u32(GGML_TYPE_ID[tensor.dtype]);
    sink.u64(offset);
    offset += bytes;
  }
  sink.zeros(pad(sink.length, GGUF_ALIGNMENT) - sink.length);
  const header = Buffer.from(sink.result());
  return { header, tensors: planned, fileSize: header.length + offset };
}

async function writeAll(fh: FileHandle, buf: Uint8Array, length: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await fh.write(buf, done, length - done);
    if (bytesWritten <= 0) throw new Error("short write");
    done += bytesWritten;
  }
}

const CHUNK_BYTES = 16 << 20;

/**
 * Streams `plan` to `filePath` through `<filePath>.tmp-<pid>` and renames it into place when complete.
 * Generation of the next chunk overlaps the write of the previous one (two alternating buffers).
 */
export async function writeGguf(
  filePath: string,
  plan: GgufPlan,
  onProgress?: (p: WriteProgress) => void,
): Promise<void> {
  const tmp = `${filePath}.tmp-${process.pid}`;
  const fh = await open(tmp, "w");
  try {
    let buffers: [Uint8Array, Uint8Array] = [new Uint8Array(new ArrayBuffer(CHUNK_BYTES)), new Uint8Array(new ArrayBuffer(CHUNK_BYTES))];
    let pos = 0;
    let pending: Promise<void> = Promise.resolve();
    let written = 0;
    let current = "header";

    const flush = async (): Promise<void> => {
      await pending;
      const full = buffers[0];
      const len = pos;
      pending = writeAll(fh, full, len).then(() => {
        written += len;
        onProgress?.({ written, total: plan.fileSize, tensor: current });
      });
      buffers = [buffers[1], full];
      pos = 0;
    };
    const putBytes = async (src: Uint8Array): Promise<void> => {
      let i = 0;
      while (i < src.length) {
        const n = Math.min(src.length - i, CHUNK_BYTES - pos);
        buffers[0].set(src.subarray(i, i + n), pos);
        pos += n;
        i += n;
        if (pos === CHUNK_BYTES) await flush();
      }
    };
    const putZeros = async (count: number): Promise<void> => {
      let left = count;
      while (left > 0) {
        const n = Math.min(left, CHUNK_BYTES - pos);
        buffers[0].fill(0, pos, pos + n);
        pos += n;
        left -= n;
        if (pos === CHUNK_BYTES) await flush();
      }
    };

    await putBytes(plan.header);
    let dataPos = 0;
    for (const { tensor, offset, bytes } of plan.tensors) {
      current = tensor.name;
      await putZeros(offset - dataPos);
      dataPos = offset;
      const fill = tensor.makeFill();
      const elBytes = DTYPE_BYTES[tensor.dtype];
      let left = tensorElementCount(tensor);
      while (left > 0) {
        // pos is always a multiple of the element size: the header and every tensor offset are 32-aligned.
        if (CHUNK_BYTES - pos < elBytes) await flush();
        const n = Math.min(left, Math.floor((CHUNK_BYTES - pos) / elBytes));
        const buf = buffers[0];
        const view = tensor.dtype === "F32"
          ? new Float32Array(buf.buffer, buf.byteOffset + pos, n)
          : new Uint16Array(buf.buffer, buf.byteOffset + pos, n);
        fill(view);
        pos += n * elBytes;
        left -= n;
        if (CHUNK_BYTES - pos < elBytes) await flush();
      }
      dataPos += bytes;
    }
    if (pos > 0) await flush();
    await pending;
    if (written !== plan.fileSize) throw new Error(`wrote ${written} bytes, planned ${plan.fileSize}`);
    await fh.sync();
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await rename(tmp, filePath);
}

// ---- numeric helpers -------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE 754 binary32 → binary16 bit pattern, round-to-nearest-even (handles subnormals, inf, NaN). */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0] ?? 0;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (r & 1) !== 0)) r += 1;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1) !== 0)) r += 1; // may carry into the exponent: still correct
  e = r >>> 10;
  if (e >= 0x1f) return sign | 0x7c00;
  return sign | r;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
