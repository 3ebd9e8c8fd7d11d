// Validates docs/openapi.yaml against the OpenAPI 3 schema with
// swagger-parser, then prints its operations as one JSON line of
// [method, path] pairs (tests/admin_api.rs compares them with the routes)
// and DONE. Usage: node validate_openapi.mjs docs/openapi.yaml
import SwaggerParser from "@apidevtools/swagger-parser";

const [file] = process.argv.slice(2);
try {
  const api = await SwaggerParser.validate(file);
  if (!api.openapi?.startsWith("3.")) throw new Error(`not OpenAPI 3: ${api.openapi}`);
  const methods = ["get", "put", "post", "delete", "patch", "head", "options"];
  const operations = [];
  for (const [path, item] of Object.entries(api.paths)) {
    for (const method of methods) if (item[method]) operations.push([method, path]);
  }
  console.log(JSON.stringify(operations));
  console.log("DONE");
} catch (e) {
  console.error(`docs/openapi.yaml is not valid: ${e.message}`);
  process.exit(1);
}
