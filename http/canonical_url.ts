/**
 * @module
 * One spelling of every request path, decided before anything looks at it. Pods
 * resolve `/api/./load`, `/x/../api/load`, `/api\load`, `/api/%6Coad` and
 * `//api/load` to `/api/load` (their URL parsers normalise, FastAPI decodes, Flask
 * merges slashes); if the router routed, authorised or gated on the raw spelling,
 * such a path would slip past the admin token or the cold gate. So the router
 * rewrites the request to the path the pod will see, and routes on that.
 */

/** Characters RFC 3986 calls unreserved: their percent-encoding means the same as themselves. */
const UNRESERVED_ESCAPE = /%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])/g;

/** A path that may read differently once normalised; others are left alone, at no cost. */
const MAY_CHANGE = /%|\\|\/\/|\/\.|\/$/;

/**
 * The request URL with its path normalised (dot segments resolved, backslashes as
 * slashes, unreserved characters decoded, repeated slashes merged), or undefined
 * when it is already so. A trailing slash is kept: `/api/chat/` is not `/api/chat`.
 */
export function canonicalUrl(raw: string): string | undefined {
  const start = raw.indexOf("/", raw.indexOf("//") + 2);
  if (start === -1) return undefined;
  const query = raw.indexOf("?", start);
  const path = query === -1 ? raw.slice(start) : raw.slice(start, query);
  if (!MAY_CHANGE.test(path)) return undefined;
  const url = new URL(raw);
  // Decoding can spell a new dot segment (`%2e%2e`), so normalise until nothing changes.
  for (let round = 0; round < 4; round++) {
    const decoded = url.pathname.replace(
      UNRESERVED_ESCAPE,
      (escape) => String.fromCharCode(parseInt(escape.slice(1), 16)),
    ).replace(/\/{2,}/g, "/");
    if (decoded === url.pathname) break;
    url.pathname = decoded;
  }
  const canonical = url.href;
  return canonical === raw ? undefined : canonical;
}

/** The path of an absolute URL as received (percent-encoded), without parsing it all. */
export function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start === -1) return "/";
  const query = url.indexOf("?", start);
  const hash = url.indexOf("#", start);
  const end = query === -1 ? hash : hash === -1 ? query : Math.min(query, hash);
  return end === -1 ? url.slice(start) : url.slice(start, end);
}
