import { defineConfig } from "vitest/config"

// The real-host suite (test/vm): boots a VM, so it runs alone, never with `npm test`.
export default defineConfig({
  test: {
    include: ["test/vm/**/*.vm.test.ts"],
    setupFiles: ["test/setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 20 * 60_000
  }
})
