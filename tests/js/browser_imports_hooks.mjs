// Resolve hook registered by browser_imports.mjs.
let imports;
let web;

export async function initialize(data) {
  ({ imports, web } = data);
}

export async function resolve(specifier, context, next) {
  const bare = !/^(\.{0,2}\/|[a-z]+:)/.test(specifier);
  if (bare && context.parentURL?.startsWith(web)) {
    const target = imports[specifier];
    if (!target) throw new Error(`"${specifier}" (imported by ${context.parentURL}) is not in web/importmap.json`);
    // Relative addresses in an import map are relative to the page, served next to the module.
    return { url: new URL(target, web).href, shortCircuit: true };
  }
  return next(specifier, context);
}
