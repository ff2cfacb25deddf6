import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The real-host suite boots a VM: `npm run test:vm` (vitest.vm.config.ts).
    exclude: ["test/vm/**", "node_modules/**"],
    setupFiles: ["test/setup.ts"],
    sequence: { concurrent: true },
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
