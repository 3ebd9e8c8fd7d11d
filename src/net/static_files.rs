//! The web demo and the JavaScript client, served on the WebSocket port:
//! `GET /` is the demo page (web/demo/index.html), `GET /web/...` the modules
//! and styles it loads.
//!
//! Owns: a fixed table of files embedded in the binary at build time
//! (`include_bytes!`), so `starling serve` needs nothing beside it, and their
//! content types. Must never: read the filesystem or turn a request path into
//! a file path. A path is a key of the table or a 404, so `..`, encoded
//! slashes and directory listings cannot reach anything else.

use super::http::{self, Request};
use tokio::io::AsyncWrite;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The request path that serves it.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";

/// `asset!("/url", "file under web/", TYPE)`.
macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $file)),
        }
    };
}

/// Everything served. A file the page needs must be listed here (the unit
/// tests check that every import of every module resolves to an entry).
pub static ASSETS: &[Asset] = &[
    asset!("/", "demo/index.html", HTML),
    asset!("/web/demo/demo.js", "demo/demo.js", JS),
    asset!("/web/demo/demo.css", "demo/demo.css", CSS),
    asset!("/web/starling-client.js", "starling-client.js", JS),
    asset!("/web/starling_pb.js", "starling_pb.js", JS),
    asset!("/web/starling-files.js", "starling-files.js", JS),
    asset!("/web/vendor/tus.js", "vendor/tus.js", JS),
    asset!("/web/vendor/protobufjs-minimal.js", "vendor/protobufjs-minimal.js", JS),
    asset!("/web/vendor/long.js", "vendor/long.js", JS),
    asset!("/web/importmap.json", "importmap.json", JSON),
];

/// The embedded file for a request path (without its query string), if any.
pub fn lookup(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Answers a request for `asset`: the file for GET, 405 for anything else.
pub async fn serve<S: AsyncWrite + Unpin>(stream: &mut S, request: &Request, asset: &Asset) {
    if request.method != "GET" {
        let body = format!("{} is a file: use GET\n", asset.path);
        return http::respond(stream, 405, "text/plain; charset=utf-8", body.as_bytes()).await;
    }
    http::respond(stream, 200, asset.content_type, asset.body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(lookup(path).unwrap_or_else(|| panic!("{path} is served")).body).unwrap()
    }

    #[test]
    fn the_page_and_the_client_are_served_with_their_types() {
        let page = lookup("/").unwrap();
        assert_eq!(page.content_type, HTML);
        assert!(text("/").contains("<title>starling"), "the demo page");
        let client = lookup("/web/starling-client.js").unwrap();
        assert_eq!(client.content_type, JS);
        assert!(text("/web/starling-client.js").contains("export class StarlingClient"));
        assert_eq!(lookup("/web/demo/demo.css").unwrap().content_type, CSS);
    }

    #[test]
    fn only_listed_paths_exist() {
        for path in [
            "",
            "/index.html",
            "/web",
            "/web/",
            "/web/demo/",
            "/web/../Cargo.toml",
            "/web/demo/../../Cargo.toml",
            "/web/%2e%2e/Cargo.toml",
            "/web/node_modules/long/index.js",
            "/web/package.json",
            "/web/starling-client.js/",
            "//web/starling-client.js",
        ] {
            assert!(lookup(path).is_none(), "{path:?} must not be served");
        }
    }

    /// `import ... from "x"` and `import "x"` specifiers of a module.
    fn imports(source: &str) -> Vec<&str> {
        let mut found = Vec::new();
        for line in source.lines().map(str::trim_start).filter(|l| l.starts_with("import ")) {
            let quoted = line.rsplit_once(" from ").map_or(&line["import ".len()..], |(_, s)| s);
            if let Some(spec) = quoted.trim().trim_end_matches(';').strip_prefix('"').and_then(|s| s.strip_suffix('"'))
            {
                found.push(spec);
            }
        }
        found
    }

    /// `spec` imported by the module at `from` (absolute URL paths only).
    fn resolve(from: &str, spec: &str) -> String {
        if spec.starts_with('/') {
            return spec.to_string();
        }
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop(); // the importing file's own name
        for segment in spec.split('/') {
            match segment {
                "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        parts.join("/")
    }

    /// What a browser loads: the page's module script, every import of every
    /// module (bare names through the page's import map), all in the table.
    #[test]
    fn every_module_the_page_loads_is_served() {
        let page = text("/");
        let map_start = page.find(r#"<script type="importmap">"#).expect("the page has an import map");
        let map_text = &page[map_start..][r#"<script type="importmap">"#.len()..];
        let map_text = &map_text[..map_text.find("</script>").unwrap()];
        let map: serde_json::Value = serde_json::from_str(map_text).expect("the import map is JSON");
        let map = map["imports"].as_object().expect("an imports object");
        // The same bare names as web/importmap.json, which app developers copy.
        let shipped: serde_json::Value = serde_json::from_slice(lookup("/web/importmap.json").unwrap().body).unwrap();
        let mut names: Vec<_> = map.keys().collect();
        let mut shipped_names: Vec<_> = shipped["imports"].as_object().unwrap().keys().collect();
        names.sort();
        shipped_names.sort();
        assert_eq!(names, shipped_names, "the page maps the bare names of web/importmap.json");

        let mut pending = vec!["/web/demo/demo.js".to_string()];
        assert!(page.contains(r#"<script type="module" src="/web/demo/demo.js">"#));
        assert!(page.contains(r#"href="/web/demo/demo.css""#));
        let mut seen = Vec::new();
        while let Some(module) = pending.pop() {
            if seen.contains(&module) {
                continue;
            }
            for spec in imports(text(&module)) {
                let target = match map.get(spec) {
                    Some(mapped) => mapped.as_str().unwrap().to_string(),
                    None if spec.starts_with(['.', '/']) => resolve(&module, spec),
                    None => panic!("{module} imports the bare name {spec:?}, which the import map lacks"),
                };
                assert!(lookup(&target).is_some(), "{module} imports {spec:?} = {target}, which is not served");
                pending.push(target);
            }
            seen.push(module);
        }
        for module in ["/web/starling-client.js", "/web/starling_pb.js", "/web/vendor/long.js"] {
            assert!(seen.iter().any(|m| m == module), "{module} is loaded: {seen:?}");
        }
    }
}
