import { defineConfig } from "vite";

// The output is embedded into the kiln binary (crates/kiln-server/build.rs reads web/dist), and
// served under a Content-Security-Policy without inline scripts: no module-preload polyfill
// (Vite would inline it), assets as files, never as data: URLs.
export default defineConfig({
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: "es2022",
  },
});
