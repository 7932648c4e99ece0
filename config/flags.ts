/**
 * @module
 * Command-line flags and `ROUTER_*` environment variables, turned into one typed
 * {@linkcode RouterConfig}. One table ({@linkcode FLAGS}) drives parsing, `--help`
 * and the list of environment variables the binary is allowed to read.
 */

/** Everything the router needs to start, already validated. */
export interface RouterConfig {
  port: number;
  host: string;
  namespace: string;
  selector: string;
  configMap: string;
  syncIntervalMs: number;
  backends: StaticBackend[];
  pollIntervalMs: number;
  pollTimeoutMs: number;
  unreachableAfter: number;
  podPort: number;
  maxBodyBytes: number;
  maxBodyTotalBytes: number;
  ejectMs: number;
  firstByteTimeoutMs: number;
  connectTimeoutMs: number;
  streamIdleTimeoutMs: number;
  bodyTimeoutMs: number;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  drainDelayMs: number;
  shutdownTimeoutMs: number;
  adminToken: string;
  maxQueue: number;
  queueTimeoutMs: number;
  /** Generations a board runs at once: 0 = by its RKLlama generation, N = N per board. */
  slots: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  kubeApi: string;
  modelsFile: string;
  unloadUnmanaged: boolean;
  leaseName: string;
  identity: string;
  loadTimeoutMs: number;
  podIdleExpiryMs: number;
  /** Models a board may hold loaded at once; 0: no limit. */
  maxLoaded: number;
  /** How long a copy added on demand may sit idle before it is unloaded. */
  onDemandIdleMs: number;
  /** The least time a copy added on demand stays loaded, so loads and unloads do not flap. */
  onDemandResidencyMs: number;
  advertiseUrl: string;
  /** Browser origins allowed to call the router (CORS); empty: none. */
  allowedOrigins: string[];
}

/** A pod given on the command line instead of found through Kubernetes. */
export interface StaticBackend {
  /** Pod and node name (`host:port` when not given). */
  name: string;
  /** Base URL without a trailing slash, e.g. `http://10.0.0.5:8080`. */
  url: string;
}

/** Log levels accepted by `--log-level`. */
export type LogLevel = "debug" | "info" | "warning" | "error";

/** `--log-format`: JSON lines for collectors, or text for people. */
export type LogFormat = "json" | "pretty";

/** A flag or environment value that cannot be used; the message names it. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

type Kind =
  | "int"
  | "string"
  | "duration"
  | "size"
  | "backends"
  | "level"
  | "bool"
  | "choice"
  | "token"
  | "origins"
  | "slots";

interface FlagSpec {
  flag: string;
  key: keyof RouterConfig;
  kind: Kind;
  default: string;
  help: string;
  min?: number;
  max?: number;
  /** A string flag whose empty value means "not set". */
  optional?: boolean;
  /** A duration that may be 0 (off). */
  zero?: boolean;
  /** The values a `choice` flag accepts. */
  choices?: readonly string[];
  /** What `--help` shows as the value, when the kind's word says too little. */
  placeholder?: string;
}

/** Every flag the router accepts, in `--help` order. */
export const FLAGS: readonly FlagSpec[] = [
  {
    flag: "port",
    key: "port",
    kind: "int",
    default: "8080",
    min: 0,
    max: 65535,
    help: "port to listen on (0 picks a free one)",
  },
  {
    flag: "host",
    key: "host",
    kind: "string",
    default: "0.0.0.0",
    help: "address to listen on",
  },
  {
    flag: "backends",
    key: "backends",
    kind: "backends",
    default: "",
    help:
      "static mode, no Kubernetes: comma-separated URL or NAME=URL (NAME is the pod and node name)",
  },
  {
    flag: "namespace",
    key: "namespace",
    kind: "string",
    default: "default",
    help: "Kubernetes namespace of the RKLlama pods",
  },
  {
    flag: "selector",
    key: "selector",
    kind: "string",
    default: "app=rkllama",
    help: "label selector of the RKLlama pods",
  },
  {
    flag: "config",
    key: "configMap",
    kind: "string",
    default: "rkllama-model-config",
    help: "ConfigMap holding models.yaml",
  },
  {
    flag: "sync-interval",
    key: "syncIntervalMs",
    kind: "duration",
    default: "30s",
    help: "how often the model placement is re-checked",
  },
  {
    flag: "kube-api",
    key: "kubeApi",
    kind: "string",
    placeholder: "URL",
    default: "",
    optional: true,
    help:
      "Kubernetes API URL (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config, else http://127.0.0.1:8001 as served by kubectl proxy)",
  },
  {
    flag: "models-file",
    key: "modelsFile",
    kind: "string",
    placeholder: "PATH",
    default: "",
    optional: true,
    help: "models.yaml to follow instead of the ConfigMap (static mode); re-read when it changes",
  },
  {
    flag: "unload-unmanaged",
    key: "unloadUnmanaged",
    kind: "bool",
    default: "false",
    help: "unload models the placement config does not name",
  },
  {
    flag: "lease-name",
    key: "leaseName",
    kind: "string",
    default: "rkllama-router",
    help: "Lease that elects the one router replica that loads and unloads models",
  },
  {
    flag: "identity",
    key: "identity",
    kind: "string",
    default: "",
    optional: true,
    help: "this replica's name in the Lease (default: random; set it to the pod name)",
  },
  {
    flag: "advertise-url",
    key: "advertiseUrl",
    kind: "string",
    placeholder: "URL",
    default: "",
    optional: true,
    help:
      "URL other router replicas reach this one at (e.g. http://$(POD_IP):8080); the leader takes their first requests for models not loaded yet",
  },
  {
    flag: "load-timeout",
    key: "loadTimeoutMs",
    kind: "duration",
    default: "10m",
    help: "longest wait for a pod to load or unload a model on the reconciler's request",
  },
  {
    flag: "pod-port",
    key: "podPort",
    kind: "int",
    default: "8080",
    min: 1,
    max: 65535,
    help: "RKLlama port on pods that name no container port 'http'",
  },
  {
    flag: "poll-interval",
    key: "pollIntervalMs",
    kind: "duration",
    default: "5s",
    help: "how often each pod is asked for /api/ps and /api/tags",
  },
  {
    flag: "poll-timeout",
    key: "pollTimeoutMs",
    kind: "duration",
    default: "3s",
    help: "how long one poll of one pod may take",
  },
  {
    flag: "unreachable-after",
    key: "unreachableAfter",
    kind: "int",
    default: "3",
    min: 1,
    max: 1000,
    help: "failed polls in a row after which a pod leaves routing (until its next good poll)",
  },
  {
    flag: "max-body",
    key: "maxBodyBytes",
    kind: "size",
    default: "64MiB",
    help: "largest request body accepted (413 past it)",
  },
  {
    flag: "max-body-total",
    key: "maxBodyTotalBytes",
    kind: "size",
    default: "64MiB",
    help:
      "request bodies held at once across all requests (at least --max-body); past it a request gets 503 and Retry-After, so large uploads at once cannot exhaust memory",
  },
  {
    flag: "eject-duration",
    key: "ejectMs",
    kind: "duration",
    default: "15s",
    help:
      "how long a pod that refused a connection or sent no answer in time gets no new requests; it returns with its next good poll after that",
  },
  {
    flag: "first-byte-timeout",
    key: "firstByteTimeoutMs",
    kind: "duration",
    default: "6m",
    help:
      "longest wait for a pod's response headers (a cold load plus a queued generation can take minutes)",
  },
  {
    flag: "connect-timeout",
    key: "connectTimeoutMs",
    kind: "duration",
    default: "5s",
    help:
      "longest wait to open a connection to a pod; past it the pod is ejected and the request tried on another",
  },
  {
    flag: "stream-idle-timeout",
    key: "streamIdleTimeoutMs",
    kind: "duration",
    default: "6m",
    help:
      "longest silence inside a pod's response body before it is ended with an error (a queued FastAPI pod is silent up to 300 s after its headers); a stream that keeps sending has no time limit",
  },
  {
    flag: "body-timeout",
    key: "bodyTimeoutMs",
    kind: "duration",
    default: "60s",
    help: "longest time a client may take to send its request body (408 past it)",
  },
  {
    flag: "header-timeout",
    key: "headerTimeoutMs",
    kind: "duration",
    default: "10s",
    help:
      "longest time a client may take to send a request's line and headers; past it the connection gets a 408 and is closed",
  },
  {
    flag: "idle-timeout",
    key: "idleTimeoutMs",
    kind: "duration",
    default: "30s",
    help:
      "how long a keep-alive connection may wait, idle, for its next request before it is closed",
  },
  {
    flag: "max-connections",
    key: "maxConnections",
    kind: "int",
    default: "2048",
    min: 1,
    max: 1_000_000,
    help:
      "client connections open at once; past it a new connection gets a 503 with Retry-After and is closed",
  },
  {
    flag: "drain-delay",
    key: "drainDelayMs",
    kind: "duration",
    default: "5s",
    zero: true,
    help:
      "on SIGTERM or SIGINT, how long /health/ready answers 503 while new requests are still taken, so endpoints can drop this replica",
  },
  {
    flag: "shutdown-timeout",
    key: "shutdownTimeoutMs",
    kind: "duration",
    default: "60s",
    help:
      "after the drain delay, how long requests and streams in flight may take to finish before the router exits anyway",
  },
  {
    flag: "admin-token",
    key: "adminToken",
    kind: "token",
    default: "",
    optional: true,
    help:
      "when set, POST /router/* and model management (/api/pull, /api/delete, /api/create, /api/load, /api/unload, ...) need 'Authorization: Bearer TOKEN'; prefer the environment variable, which ps does not show",
  },
  {
    flag: "max-queue",
    key: "maxQueue",
    kind: "int",
    default: "256",
    min: 0,
    max: 1_000_000,
    help:
      "requests per model that may wait in the router for a free board (or for the model to load); more get 503 with Retry-After",
  },
  {
    flag: "queue-timeout",
    key: "queueTimeoutMs",
    kind: "duration",
    default: "5m",
    help:
      "longest a request waits in the router for a free board; then 503 with Retry-After (a cold load plus the queue before it)",
  },
  {
    flag: "slots",
    key: "slots",
    kind: "slots",
    default: "auto",
    help:
      "generations a board runs at once: auto = RKLlama's own (one per board on the FastAPI generation, one per model on Flask), or N per board for other Ollama-compatible servers",
  },
  {
    flag: "pod-idle-expiry",
    key: "podIdleExpiryMs",
    kind: "duration",
    default: "30m",
    help:
      "RKLlama's max_minutes_loaded_in_memory: a model idle this long may be gone, so the next request for it is sent alone",
  },
  {
    flag: "max-loaded",
    key: "maxLoaded",
    kind: "int",
    default: "9",
    min: 0,
    max: 1000,
    help:
      "models a board may hold loaded at once (0: no limit); RKLlama refuses loads past its max_number_models_loaded_in_memory (FA 10, FL 9), so keep this at or below the boards' setting",
  },
  {
    flag: "on-demand-idle",
    key: "onDemandIdleMs",
    kind: "duration",
    default: "5m",
    help:
      "how long a copy loaded on demand (for a long queue) may go without requests before it is unloaded again, down to models.yaml's replicas (one copy for models it does not name)",
  },
  {
    flag: "on-demand-residency",
    key: "onDemandResidencyMs",
    kind: "duration",
    default: "2m",
    help:
      "the least time a copy loaded on demand stays loaded, idle or not, so copies are not loaded and unloaded over and over",
  },
  {
    flag: "allowed-origins",
    key: "allowedOrigins",
    kind: "origins",
    default: "",
    help:
      "browser origins that may call the router (CORS), comma-separated, as Ollama's OLLAMA_ORIGINS: e.g. https://chat.example.com,http://localhost:*; * allows any; none by default",
  },
  {
    flag: "log-level",
    key: "logLevel",
    kind: "level",
    default: "info",
    help: "debug, info, warn (or warning) or error",
  },
  {
    flag: "log-format",
    key: "logFormat",
    kind: "choice",
    choices: ["json", "pretty"],
    default: "json",
    help: "json (one JSON object per line, for collectors) or pretty (text for a terminal)",
  },
];

/**
 * Variables other than the flags' `ROUTER_*` that the router reads: where the
 * Kubernetes API is (in-cluster, or a kubeconfig). The binary may read these and
 * no others (libraries asking for more find nothing: `--ignore-env`).
 */
export const OTHER_ENV = [
  "KUBERNETES_SERVICE_HOST",
  "KUBERNETES_SERVICE_PORT",
  "KUBECONFIG",
  "HOME",
] as const;

/** The environment variable that stands for a flag: `--poll-interval` → `ROUTER_POLL_INTERVAL`. */
export function envName(flag: string): string {
  return "ROUTER_" + flag.toUpperCase().replaceAll("-", "_");
}

/** The `--help` text. */
export function helpText(): string {
  const lines = [
    "rkllama-router: one Ollama-compatible endpoint in front of many RKLlama pods",
    "",
    "usage: rkllama-router [flags]",
    "",
    "Every flag can also be set by the environment variable shown; a flag wins over it.",
    "",
  ];
  for (const spec of FLAGS) {
    lines.push(`  --${spec.flag} ${spec.placeholder ?? placeholder(spec.kind)}`.trimEnd());
    const dflt = spec.default === "" ? "" : ` (default ${spec.default})`;
    lines.push(`      ${spec.help}${dflt}  [${envName(spec.flag)}]`);
  }
  lines.push("  --help");
  lines.push("      print this text and exit");
  return lines.join("\n");
}

function placeholder(kind: Kind): string {
  return {
    int: "N",
    string: "TEXT",
    duration: "DURATION",
    size: "BYTES",
    backends: "LIST",
    level: "LEVEL",
    bool: "",
    choice: "NAME",
    token: "TOKEN",
    slots: "auto|N",
    origins: "LIST",
  }[kind];
}

/** What {@linkcode parseConfig} found: a config, or a request for help. */
export type ParsedArgs = { help: true } | { help: false; config: RouterConfig };

/**
 * Reads flags, then environment variables, then defaults.
 *
 * @param args command-line arguments (`--flag value` or `--flag=value`)
 * @param getEnv reads one environment variable (only the names of {@linkcode FLAGS} are asked for)
 * @throws {ConfigError} naming the first flag or variable that cannot be used
 * @example
 * ```ts
 * const parsed = parseConfig(["--port", "9000"], () => undefined);
 * ```
 */
export function parseConfig(
  args: readonly string[],
  getEnv: (name: string) => string | undefined,
): ParsedArgs {
  const given = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--help" || arg === "-h") return { help: true };
    if (!arg.startsWith("--")) {
      throw new ConfigError(`unexpected argument '${arg}'`);
    }
    const eq = arg.indexOf("=");
    const flag = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    if (!FLAGS.some((s) => s.flag === flag)) {
      throw new ConfigError(`unknown flag --${flag}`);
    }
    const isBool = FLAGS.some((s) => s.flag === flag && s.kind === "bool");
    let value: string;
    if (eq !== -1) {
      value = arg.slice(eq + 1);
    } else if (isBool) {
      value = "true";
    } else {
      if (i + 1 >= args.length) {
        throw new ConfigError(`--${flag} needs a value`);
      }
      value = args[++i];
    }
    given.set(flag, value);
  }
  const config: Record<string, unknown> = {};
  for (const spec of FLAGS) {
    const fromFlag = given.get(spec.flag);
    const fromEnv = getEnv(envName(spec.flag));
    const source = fromFlag !== undefined
      ? `--${spec.flag}`
      : fromEnv !== undefined
      ? envName(spec.flag)
      : `default of --${spec.flag}`;
    const raw = fromFlag ?? fromEnv ?? spec.default;
    config[spec.key] = parseValue(spec, raw, source);
  }
  return { help: false, config: config as unknown as RouterConfig };
}

function parseValue(spec: FlagSpec, raw: string, source: string): unknown {
  const fail = (expected: string): never => {
    throw new ConfigError(`${source}: expected ${expected}, got '${raw}'`);
  };
  switch (spec.kind) {
    case "string":
      if (raw.trim() === "" && !spec.optional) fail("a non-empty value");
      return raw.trim();
    case "token":
      // A blank or spaced token would silently mean no protection, or one no client
      // can send in `Authorization: Bearer <token>`: refuse both.
      if (raw === "") return "";
      if (!/^[\x21-\x7e]+$/.test(raw)) fail("printable characters without spaces");
      return raw;
    case "bool":
      if (["true", "1", "yes", ""].includes(raw.trim().toLowerCase())) return true;
      if (["false", "0", "no"].includes(raw.trim().toLowerCase())) return false;
      return fail("true or false");
    case "int": {
      if (!/^\d+$/.test(raw.trim())) {
        fail(`a whole number from ${spec.min} to ${spec.max}`);
      }
      const n = Number(raw.trim());
      if (n < (spec.min ?? 0) || n > (spec.max ?? Number.MAX_SAFE_INTEGER)) {
        fail(`a whole number from ${spec.min} to ${spec.max}`);
      }
      return n;
    }
    case "duration": {
      const ms = parseDuration(raw);
      if (ms === undefined || ms < 0 || (ms === 0 && !spec.zero)) {
        fail(`a ${spec.zero ? "" : "positive "}duration such as 500ms, 5s, 2m or 1h`);
      }
      // Timers fire at once past 2^31-1 ms (about 24.8 days).
      if (ms! > MAX_TIMER_MS) fail("a duration of at most 24 days");
      return ms;
    }
    case "size": {
      const bytes = parseSize(raw);
      if (bytes === undefined || bytes <= 0) {
        fail("a positive size such as 1048576, 512KiB, 64MiB or 1GiB");
      }
      return bytes;
    }
    case "backends": {
      const backends = parseBackends(raw, source);
      // Given but empty (`--backends ""`, an unset template variable) is a mistake:
      // silently discovering pods through Kubernetes instead found another API server.
      if (backends.length === 0 && !source.startsWith("default")) {
        fail("at least one URL or NAME=URL (leave it out to discover pods through Kubernetes)");
      }
      return backends;
    }
    case "level":
      if (raw === "warn") return "warning";
      if (!["debug", "info", "warning", "error"].includes(raw)) {
        fail("one of debug, info, warn, error");
      }
      return raw;
    case "choice":
      if (!spec.choices!.includes(raw.trim())) fail(`one of ${spec.choices!.join(", ")}`);
      return raw.trim();
    case "slots": {
      if (raw.trim() === "auto") return 0;
      if (!/^\d+$/.test(raw.trim()) || Number(raw) < 1 || Number(raw) > 1000) {
        fail("auto, or a whole number of generations per board from 1 to 1000");
      }
      return Number(raw.trim());
    }
    case "origins": {
      const origins = raw.split(",").map((origin) => origin.trim()).filter((o) => o !== "");
      for (const origin of origins) {
        if (origin !== "*" && !/^[a-z][a-z0-9+.-]*:\/\/[^/\s]+$/i.test(origin)) {
          fail("comma-separated origins such as https://chat.example.com or http://localhost:*");
        }
      }
      return origins;
    }
  }
}

const MAX_TIMER_MS = 2 ** 31 - 1;

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Milliseconds in a duration such as `500ms`, `5s`, `1.5m`, `1h` or `1m30s`;
 * a bare number is seconds. Returns `undefined` when the text is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed) * 1000;
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(trimmed)) return undefined;
  let total = 0;
  for (const part of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(part[1]) * DURATION_UNITS[part[2]];
  }
  return Math.round(total);
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
};

/** Bytes in a size such as `1048576`, `512KiB`, `64MiB`, `1GB`; `undefined` if not a size. */
export function parseSize(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  if (!match) return undefined;
  const unit = SIZE_UNITS[match[2].toLowerCase()];
  if (unit === undefined) return undefined;
  return Math.floor(Number(match[1]) * unit);
}

/**
 * Parses `--backends`: comma-separated `URL` or `NAME=URL`.
 *
 * @throws {ConfigError} on a URL that is not http(s), or a name used twice
 * @example
 * ```ts
 * parseBackends("rk1=http://10.0.0.5:8080,http://10.0.0.6:8080", "--backends");
 * // [{name: "rk1", url: "http://10.0.0.5:8080"}, {name: "10.0.0.6:8080", url: "http://10.0.0.6:8080"}]
 * ```
 */
export function parseBackends(raw: string, source = "--backends"): StaticBackend[] {
  const backends: StaticBackend[] = [];
  for (const item of raw.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const eq = item.indexOf("=");
    const hasName = eq > 0 && !item.slice(0, eq).includes("/");
    const urlText = hasName ? item.slice(eq + 1).trim() : item;
    let url: URL;
    try {
      url = new URL(urlText);
    } catch {
      throw new ConfigError(
        `${source}: '${item}' is not URL or NAME=URL (e.g. rk1=http://10.0.0.5:8080)`,
      );
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new ConfigError(`${source}: '${urlText}' must be an http:// or https:// URL`);
    }
    if (url.pathname !== "/" || url.search !== "" || url.hash !== "") {
      throw new ConfigError(
        `${source}: '${urlText}' must be a bare scheme://host:port, without a path`,
      );
    }
    const name = hasName ? item.slice(0, eq).trim() : url.host;
    if (backends.some((b) => b.name === name)) {
      throw new ConfigError(`${source}: the name '${name}' is used twice`);
    }
    backends.push({ name, url: url.origin });
  }
  return backends;
}
