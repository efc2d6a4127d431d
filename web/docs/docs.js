// The API docs page: renders /openapi.json (every operation with its parameters, body and
// answers) and sends an operation's request from a form. Plain DOM, no framework, nothing
// fetched but this server's own files; every control is a native one, so the keyboard works.
"use strict";

const $ = (tag, attrs = {}, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v);
  }
  for (const kid of kids) if (kid != null) el.append(kid);
  return el;
};

let spec;
const keyInput = document.getElementById("api-key");
keyInput.value = sessionStorage.getItem("qc.apiKey") || "";
keyInput.addEventListener("input", () => sessionStorage.setItem("qc.apiKey", keyInput.value));
document.getElementById("key-form").addEventListener("submit", (e) => e.preventDefault());

function resolve(obj) {
  while (obj && obj.$ref) obj = obj.$ref.split("/").slice(1).reduce((o, k) => o[k], spec);
  return obj;
}

function schemaText(schema) {
  // $refs inlined one level deep, so a body's fields show without chasing names.
  const seen = new Set();
  const inline = (s, depth) => {
    if (!s || typeof s !== "object") return s;
    if (s.$ref) {
      const name = s.$ref.split("/").pop();
      if (depth > 2 || seen.has(name)) return name;
      seen.add(name);
      const r = inline(resolve(s), depth + 1);
      seen.delete(name);
      return r;
    }
    if (Array.isArray(s)) return s.map((x) => inline(x, depth));
    const out = {};
    for (const [k, v] of Object.entries(s)) out[k] = inline(v, depth);
    return out;
  };
  return JSON.stringify(inline(schema, 0), null, 2);
}

function paramsTable(params) {
  if (!params.length) return null;
  const t = $("table", {}, $("tr", {}, $("th", { text: "name" }), $("th", { text: "in" }), $("th", { text: "" }), $("th", { text: "what" })));
  for (const p of params) {
    t.append($("tr", {}, $("td", {}, $("code", { text: p.name })), $("td", { text: p.in }),
      $("td", { text: p.required ? "required" : "" }), $("td", { text: (p.description || "") + (p.schema && p.schema.enum ? " (" + p.schema.enum.join(", ") + ")" : "") })));
  }
  return t;
}

function responsesList(responses) {
  const t = $("table", {}, $("tr", {}, $("th", { text: "status" }), $("th", { text: "what" })));
  for (const [code, r0] of Object.entries(responses)) {
    const r = resolve(r0);
    t.append($("tr", {}, $("td", {}, $("code", { text: code })), $("td", { text: r.description || "" })));
  }
  return t;
}

function tryForm(path, method, op) {
  const form = $("form", { class: "try" });
  const params = op.parameters || [];
  const inputs = {};
  for (const p of params) {
    const id = `${op.operationId}-${p.in}-${p.name}`;
    inputs[p.name] = $("input", { id, name: p.name, placeholder: p.schema && p.schema.default != null ? String(p.schema.default) : "" });
    form.append($("label", { for: id, text: `${p.name} (${p.in})${p.required ? " *" : ""}` }), inputs[p.name]);
  }
  let body;
  const media = op.requestBody && op.requestBody.content && Object.entries(op.requestBody.content)[0];
  if (media) {
    const id = `${op.operationId}-body`;
    body = $("textarea", { id, spellcheck: "false" });
    body.value = media[1].example ? JSON.stringify(media[1].example, null, 2) : "{}";
    form.append($("label", { for: id, text: `body (${media[0]})` }), body);
  }
  const out = $("div", { "aria-live": "polite" });
  form.append($("button", { type: "submit", text: `Send ${method.toUpperCase()}` }), out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let url = path;
    const query = new URLSearchParams();
    for (const p of params) {
      const v = inputs[p.name].value;
      if (p.in === "path") url = url.replace(`{${p.name}}`, p.name === "file" ? v : encodeURIComponent(v));
      else if (p.in === "query" && v !== "") query.set(p.name, v);
    }
    if ([...query].length) url += "?" + query;
    const headers = {};
    if (keyInput.value) headers.authorization = "Bearer " + keyInput.value;
    const init = { method: method.toUpperCase(), headers };
    if (body) {
      headers["content-type"] = media[0];
      init.body = body.value;
    }
    out.replaceChildren($("p", { text: `${init.method} ${url} ...` }));
    try {
      const res = await fetch(url, init);
      const text = await res.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
      const hs = [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
      out.replaceChildren($("p", {}, $("span", { class: res.ok ? "status-ok" : "status-err", text: `${res.status} ${res.statusText}` }), ` ${init.method} ${url}`),
        $("pre", { text: hs }), $("pre", { text: shown.length > 200000 ? shown.slice(0, 200000) + "\n..." : shown }));
    } catch (err) {
      out.replaceChildren($("p", { class: "status-err", text: String(err) }));
    }
  });
  return form;
}

function render() {
  document.getElementById("intro").replaceChildren(spec.info.description + " ", $("a", { href: "/openapi.json", text: "openapi.json" }));
  const toc = document.getElementById("toc");
  const main = document.getElementById("ops");
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const id = op.operationId;
      toc.append($("a", { href: "#" + id, text: `${method.toUpperCase()} ${path}` }));
      const security = (op.security || spec.security || []).map((s) => Object.keys(s)[0] || "none").join(" or ");
      const media = op.requestBody && op.requestBody.content && Object.entries(op.requestBody.content)[0];
      const details = $("details", { class: "op", id },
        $("summary", {}, $("span", { class: `method ${method}`, text: method }), $("span", { class: "path", text: path }), $("span", { text: op.summary || "" })),
        $("div", {},
          op.description ? $("p", { text: op.description }) : null,
          security ? $("p", {}, "Auth: ", $("code", { text: security })) : null,
          paramsTable(op.parameters || []),
          media ? $("div", {}, $("h4", { text: "Body" }), $("pre", { text: schemaText(media[1].schema) })) : null,
          $("h4", { text: "Answers" }), responsesList(op.responses),
          $("h4", { text: "Try it" }), tryForm(path, method, op)));
      main.append(details);
    }
  }
  if (location.hash) {
    const el = document.getElementById(location.hash.slice(1));
    if (el) { el.open = true; el.scrollIntoView(); }
  }
}

fetch("/openapi.json").then((r) => r.json()).then((s) => { spec = s; render(); }).catch((err) => {
  document.getElementById("intro").textContent = "Could not load /openapi.json: " + err;
});
