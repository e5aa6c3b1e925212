import { start } from './boot'
import './styles.css'

void start()
