import type { GlobalThemeOverrides } from 'naive-ui'

/**
 * Naive UI's colours, chosen for WCAG AA contrast (>= 4.5:1 on white for text and buttons): the
 * same as styles.css's variables. A screen that renders a Naive component wraps it in
 * `<NConfigProvider :theme-overrides="theme">` there, in its own chunk. The app's shell has no
 * provider: no Naive component is rendered anywhere, and the shell's one was part of every page's
 * entry script and of its mount task (web/README.md, "Start-up margin").
 */
export const theme: GlobalThemeOverrides = {
  common: {
    primaryColor: '#1d5fa8',
    primaryColorHover: '#174d89',
    primaryColorPressed: '#123d6d',
    primaryColorSuppl: '#1d5fa8',
    errorColor: '#b3261e',
    textColor3: '#555b66',
    placeholderColor: '#5f6670',
  },
}
