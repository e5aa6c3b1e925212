import type { GlobalThemeOverrides } from 'naive-ui'

/** Colours chosen for WCAG AA contrast (>= 4.5:1 on white for text and buttons). */
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
