/**
 * @module
 * Error responses clients can read: Ollama's `{"error": "..."}` on its paths, and
 * OpenAI's `{"error": {"message", "type", "code"}}` under `/v1/`, which is what the
 * `openai` SDKs parse (Ollama's own OpenAI layer answers the same way).
 */

const OPENAI_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "not_found_error",
  413: "invalid_request_error",
};

/**
 * A JSON error response shaped for the API family of `path`.
 *
 * @example
 * ```ts
 * errorResponse("/api/chat", 404, "model 'x' not found"); // {"error":"model 'x' not found"}
 * ```
 */
export function errorResponse(
  path: string,
  status: number,
  message: string,
  headers: HeadersInit = {},
): Response {
  const body = path.startsWith("/v1/")
    ? {
      error: {
        message,
        type: OPENAI_TYPES[status] ?? (status >= 500 ? "server_error" : "api_error"),
        param: null,
        code: null,
      },
    }
    : { error: message };
  const response = Response.json(body, { status });
  for (const [name, value] of new Headers(headers)) response.headers.set(name, value);
  return response;
}
