// Renders a Kustomize directory the way `kubectl kustomize` does, for the subset deploy/k8s uses:
// `resources` (files and other kustomization directories), `images` (newName/newTag) and `patches` with a
// kind/name target and a JSON 6902 patch. Anything else in a kustomization.yaml is an error here, so the
// manifests cannot silently use a feature this renderer (and so the tests) would ignore.
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parse, parseAllDocuments } from "yaml";

export type Manifest = Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string } };
type Json = unknown;
type PatchOp = { op: "add" | "replace" | "remove"; path: string; value?: Json };
type Kustomization = {
  resources?: string[];
  images?: { name: string; newName?: string; newTag?: string }[];
  patches?: { target: { kind: string; name: string }; patch: string }[];
};

const supportedKeys = new Set(["apiVersion", "kind", "resources", "images", "patches"]);

function pointer(p: string): string[] {
  if (!p.startsWith("/")) throw new Error(`JSON pointer must start with /: ${p}`);
  return p.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

/** RFC 6902 add/replace/remove on a parsed document (in place). */
export function applyJsonPatch(doc: Json, ops: readonly PatchOp[]): void {
  for (const op of ops) {
    const keys = pointer(op.path);
    const last = keys.pop()!;
    let parent: Json = doc;
    for (const key of keys) {
      if (parent === null || typeof parent !== "object" || !(key in parent)) throw new Error(`${op.op} ${op.path}: no ${key}`);
      parent = (parent as Record<string, Json>)[key];
    }
    if (Array.isArray(parent)) {
      const index = last === "-" ? parent.length : Number(last);
      if (!Number.isInteger(index) || index < 0 || index > parent.length) throw new Error(`${op.op} ${op.path}: bad index`);
      if (op.op === "add") parent.splice(index, 0, op.value);
      else if (index >= parent.length) throw new Error(`${op.op} ${op.path}: no element ${index}`);
      else if (op.op === "replace") parent[index] = op.value;
      else parent.splice(index, 1);
    } else if (parent !== null && typeof parent === "object") {
      const record = parent as Record<string, Json>;
      if (op.op !== "add" && !(last in record)) throw new Error(`${op.op} ${op.path}: no ${last}`);
      if (op.op === "remove") delete record[last];
      else record[last] = op.value;
    } else {
      throw new Error(`${op.op} ${op.path}: parent is not a container`);
    }
  }
}

function containersOf(doc: Manifest): Record<string, unknown>[] {
  const spec = (doc["spec"] as { template?: { spec?: { containers?: unknown[]; initContainers?: unknown[] } } } | undefined)?.template?.spec;
  return [...(spec?.containers ?? []), ...(spec?.initContainers ?? [])] as Record<string, unknown>[];
}

export function renderKustomization(dir: string): Manifest[] {
  const file = path.join(dir, "kustomization.yaml");
  const k = parse(readFileSync(file, "utf8")) as Kustomization & Record<string, unknown>;
  for (const key of Object.keys(k)) if (!supportedKeys.has(key)) throw new Error(`${file}: "${key}" is not supported by test/helpers/kustomize.ts`);
  const docs: Manifest[] = [];
  for (const resource of k.resources ?? []) {
    const target = path.resolve(dir, resource);
    if (existsSync(target) && statSync(target).isDirectory()) docs.push(...renderKustomization(target));
    else for (const d of parseAllDocuments(readFileSync(target, "utf8"))) {
      if (d.errors.length > 0) throw new Error(`${target}: ${d.errors[0]!.message}`);
      docs.push(d.toJS() as Manifest);
    }
  }
  for (const image of k.images ?? []) {
    for (const doc of docs) for (const container of containersOf(doc)) {
      const [name, tag] = String(container["image"]).split(":");
      if (name !== image.name) continue;
      container["image"] = `${image.newName ?? name}${image.newTag !== undefined ? `:${image.newTag}` : tag !== undefined ? `:${tag}` : ""}`;
    }
  }
  for (const { target, patch } of k.patches ?? []) {
    const matches = docs.filter((d) => d.kind === target.kind && d.metadata.name === target.name);
    if (matches.length === 0) throw new Error(`${file}: patch target ${target.kind}/${target.name} not found`);
    for (const doc of matches) applyJsonPatch(doc, parse(patch) as PatchOp[]);
  }
  return docs;
}
