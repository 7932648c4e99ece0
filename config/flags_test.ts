import assert from "node:assert/strict";
import {
  ConfigError,
  envName,
  FLAGS,
  helpText,
  parseBackends,
  parseConfig,
  parseDuration,
  parseSize,
  type RouterConfig,
} from "./flags.ts";

function configOf(args: string[], env: Record<string, string> = {}): RouterConfig {
  const parsed = parseConfig(args, (name) => env[name]);
  if (parsed.help) throw new Error("unexpected --help");
  return parsed.config;
}

Deno.test("parseConfig() keeps the seed's defaults", () => {
  const config = configOf([]);
  assert.deepEqual(config.port, 8080);
  assert.deepEqual(config.namespace, "default");
  assert.deepEqual(config.selector, "app=rkllama");
  assert.deepEqual(config.configMap, "rkllama-model-config");
  assert.deepEqual(config.syncIntervalMs, 30_000);
  assert.deepEqual(config.pollIntervalMs, 5_000);
  assert.deepEqual(config.podPort, 8080);
  assert.deepEqual(config.maxBodyBytes, 64 * 1024 * 1024);
  assert.deepEqual(config.backends, []);
});

Deno.test("parseConfig() takes --flag value and --flag=value, and a flag wins over the environment", () => {
  const config = configOf(["--port", "9000", "--poll-interval=2s"], {
    ROUTER_PORT: "7000",
    ROUTER_NAMESPACE: "npu",
  });
  assert.deepEqual(config.port, 9000);
  assert.deepEqual(config.pollIntervalMs, 2000);
  assert.deepEqual(config.namespace, "npu");
});

Deno.test("parseConfig() names the flag or variable that is wrong", () => {
  const message = (args: string[], env: Record<string, string> = {}) => {
    try {
      configOf(args, env);
    } catch (error) {
      if (error instanceof ConfigError) return error.message;
      throw error;
    }
    return "no error";
  };
  assert.deepEqual(
    message(["--port", "http"]),
    "--port: expected a whole number from 0 to 65535, got 'http'",
  );
  assert.deepEqual(message(["--bogus", "1"]), "unknown flag --bogus");
  assert.deepEqual(message(["--port"]), "--port needs a value");
  assert.deepEqual(message(["stray"]), "unexpected argument 'stray'");
  assert.deepEqual(
    message([], { ROUTER_POLL_INTERVAL: "soon" }),
    "ROUTER_POLL_INTERVAL: expected a positive duration such as 500ms, 5s, 2m or 1h, got 'soon'",
  );
  assert.deepEqual(
    message(["--max-body", "lots"]),
    "--max-body: expected a positive size such as 1048576, 512KiB, 64MiB or 1GiB, got 'lots'",
  );
});

Deno.test("parseConfig() answers --help before looking at other flags", () => {
  assert.deepEqual(parseConfig(["--port", "x", "--help"], () => undefined), { help: true });
});

Deno.test("helpText() lists every flag with its environment variable", () => {
  const text = helpText();
  for (const spec of FLAGS) {
    assert.match(text, new RegExp(`--${spec.flag}( |$)`, "m"), spec.flag);
    assert.ok(text.includes(envName(spec.flag)), spec.flag);
  }
});

Deno.test("parseDuration() reads Go-style durations and bare seconds", () => {
  assert.deepEqual(parseDuration("500ms"), 500);
  assert.deepEqual(parseDuration("5s"), 5000);
  assert.deepEqual(parseDuration("1m30s"), 90_000);
  assert.deepEqual(parseDuration("1.5h"), 5_400_000);
  assert.deepEqual(parseDuration("7"), 7000);
  assert.deepEqual(parseDuration("5 s"), undefined);
  assert.deepEqual(parseDuration("-5s"), undefined);
});

Deno.test("parseSize() reads binary and decimal units", () => {
  assert.deepEqual(parseSize("1024"), 1024);
  assert.deepEqual(parseSize("64MiB"), 64 * 1024 * 1024);
  assert.deepEqual(parseSize("64M"), 64 * 1024 * 1024);
  assert.deepEqual(parseSize("1GB"), 1e9);
  assert.deepEqual(parseSize("12 parsecs"), undefined);
});

Deno.test("parseBackends() takes URL or NAME=URL and names unnamed pods host:port", () => {
  assert.deepEqual(parseBackends("rk1=http://10.0.0.5:8080, http://10.0.0.6:8080"), [
    { name: "rk1", url: "http://10.0.0.5:8080" },
    { name: "10.0.0.6:8080", url: "http://10.0.0.6:8080" },
  ]);
  assert.throws(() => parseBackends("ftp://x:1"), {
    name: "ConfigError",
    message: /must be an http/,
  });
  assert.throws(() => parseBackends("a=http://x:1,a=http://y:1"), {
    name: "ConfigError",
    message: /used twice/,
  });
  assert.throws(() => parseBackends("http://x:1/api"), {
    name: "ConfigError",
    message: /without a path/,
  });
  assert.throws(() => parseBackends("not a url"), {
    name: "ConfigError",
    message: /is not URL or NAME=URL/,
  });
});

Deno.test("an admin token with spaces or only blanks stops the router instead of weakening it", () => {
  for (const bad of ["   ", "a b", "tab\there"]) {
    assert.throws(
      () => parseConfig([], (name) => name === "ROUTER_ADMIN_TOKEN" ? bad : undefined),
      /ROUTER_ADMIN_TOKEN: expected printable characters without spaces/,
    );
  }
  const parsed = parseConfig(["--admin-token", "s3cret-Token_1"], () => undefined);
  assert.equal(parsed.help ? "" : parsed.config.adminToken, "s3cret-Token_1");
});

Deno.test("--allowed-origins takes a comma-separated list of origins, none by default", () => {
  assert.deepEqual(configOf([]).allowedOrigins, []);
  assert.deepEqual(
    configOf(["--allowed-origins", "https://chat.example.com, http://localhost:*"]).allowedOrigins,
    ["https://chat.example.com", "http://localhost:*"],
  );
  assert.deepEqual(configOf([], { ROUTER_ALLOWED_ORIGINS: "*" }).allowedOrigins, ["*"]);
  for (const bad of ["chat.example.com", "https://chat.example.com/path", "http://a b"]) {
    assert.throws(
      () => configOf(["--allowed-origins", bad]),
      (error: unknown) =>
        error instanceof ConfigError && /--allowed-origins: expected/.test(error.message),
      bad,
    );
  }
});

Deno.test("parseConfig() refuses an empty --backends or ROUTER_BACKENDS instead of discovering pods", () => {
  for (
    const [args, env] of [[["--backends", ""], {}], [["--backends= , "], {}], [[], {
      ROUTER_BACKENDS: "",
    }]] as const
  ) {
    assert.throws(() => parseConfig(args, (name) => (env as Record<string, string>)[name]), {
      name: "ConfigError",
      message: /at least one URL or NAME=URL/,
    });
  }
});

Deno.test("parseConfig() bounds copies on demand: --max-loaded 9 (0: no limit), 5 min idle, 2 min residency", () => {
  const config = configOf([]);
  assert.equal(config.maxLoaded, 9);
  assert.equal(config.onDemandIdleMs, 300_000);
  assert.equal(config.onDemandResidencyMs, 120_000);
  const given = configOf(["--max-loaded", "0", "--on-demand-idle", "30s"], {
    ROUTER_ON_DEMAND_RESIDENCY: "1m",
  });
  assert.equal(given.maxLoaded, 0);
  assert.equal(given.onDemandIdleMs, 30_000);
  assert.equal(given.onDemandResidencyMs, 60_000);
  assert.throws(() => configOf(["--max-loaded", "-1"]), ConfigError);
});
