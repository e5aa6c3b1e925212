import { createApp } from 'vue'
import { createPinia } from 'pinia'
import App from './App.vue'
import { makeRouter } from './router'
import { useAuthStore } from './stores/auth'
import './styles.css'

async function start(): Promise<void> {
  const app = createApp(App)
  app.use(createPinia())
  // Restore the session before the first navigation so a reload keeps the user on their page.
  await useAuthStore().restore()
  app.use(makeRouter())
  app.mount('#app')
}

void start()
