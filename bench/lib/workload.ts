// Deterministic inputs: the same bytes for both servers and for every run, so results are comparable
// across runs and machines. Spanish, because that is what the service's users write.

/** mulberry32: a tiny seeded PRNG (quality is irrelevant here, reproducibility is not). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(next: () => number, items: readonly T[]): T {
  return items[Math.floor(next() * items.length)] as T;
}

const SUBJECTS = ["el estudiante", "la profesora", "mi hermano", "nuestra vecina", "el equipo", "la directora", "un amigo", "los niños", "la familia", "el médico", "una artista", "el conductor"];
const VERBS = ["prepara", "revisa", "explica", "compra", "escribe", "organiza", "descubre", "recuerda", "visita", "comparte", "termina", "busca"];
const OBJECTS = ["un informe largo", "la tarea de matemáticas", "una receta nueva", "el plan del viaje", "una carta", "los resultados", "un libro antiguo", "la lista de compras", "el proyecto final", "una canción"];
const TAILS = ["por la mañana", "antes de la cena", "con mucha paciencia", "en la biblioteca", "durante el fin de semana", "sin prisa", "junto al río", "para la reunión del lunes", "cerca de la estación", "con ayuda de sus compañeros", "después de clase", "en silencio"];
const FILLER = ["muy", "también", "casi siempre", "todavía", "de nuevo", "otra vez", "al final", "poco a poco"];

/** A sentence of 5–15 words. */
function sentence(next: () => number): string {
  const words = [pick(next, SUBJECTS), pick(next, VERBS), pick(next, OBJECTS)].join(" ").split(" ");
  const target = 5 + Math.floor(next() * 11);
  while (words.length < target) words.push(...pick(next, [...TAILS, ...FILLER]).split(" "));
  const text = words.slice(0, target).join(" ");
  return `${text.charAt(0).toUpperCase()}${text.slice(1)}.`;
}

/** `count` short Spanish sentences (5–15 words each), the same for a given seed. */
export function spanishSentences(count: number, seed = 20240611): string[] {
  const next = rng(seed);
  return Array.from({ length: count }, () => sentence(next));
}

const TOPICS = ["álgebra", "historia de España", "química orgánica", "literatura latinoamericana", "biología celular", "geografía física", "programación", "economía doméstica"];

/**
 * A system prompt of about 400 Qwen3 tokens that starts with text unique to `id`, so no cache holds any of
 * it beyond the chat template's first tokens.
 */
export function systemPrompt(id: number): string {
  const next = rng(0x5eed0000 + id);
  const intro = `Sesión ${id}-${Math.floor(next() * 1e9).toString(36)}. Eres Bora, un mentor paciente de ${pick(next, TOPICS)} para estudiantes de secundaria.`;
  const rules: string[] = [];
  // ~16 Qwen3 tokens per sentence: 22 sentences plus the intro and the closing rule land near 400 tokens.
  for (let i = 0; i < 22; i++) rules.push(sentence(next));
  return `${intro} Contexto de la clase: ${rules.join(" ")} Responde siempre en español, con frases cortas y ejemplos.`;
}

export function question(id: number): string {
  const next = rng(0x9e3779b9 ^ id);
  return `Pregunta ${id}: ¿puedes explicarme ${pick(next, TOPICS)} con un ejemplo sobre ${pick(next, OBJECTS)}?`;
}

/** The short prompt for decode runs: prompt processing is not what they measure. */
export function decodePrompt(client: number): string {
  return `Escribe una historia larga sobre ${pick(rng(client + 1), OBJECTS)} (cliente ${client}).`;
}
