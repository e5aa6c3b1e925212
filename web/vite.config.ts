import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'
import { precompressPlugin } from './precompress.ts'

// `npm run dev` proxies the API and the sockets to the server (`make run`, port 8000 by default).
const backend = process.env.ESSAYCOACH_BACKEND ?? 'http://127.0.0.1:8000'

export default defineConfig({
  // `.br` and `.gz` beside each text file of dist/, which the Gateway sends as they are.
  plugins: [vue(), precompressPlugin()],
  server: {
    proxy: {
      '/api': { target: backend, changeOrigin: true },
      '/ws': { target: backend.replace(/^http/, 'ws'), ws: true, changeOrigin: true },
    },
  },
  build: {
    target: 'es2022',
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  test: {
    environment: 'happy-dom',
    include: ['tests/**/*.test.ts'],
  },
})
