import { tokenBox } from "./common.js"; tokenBox("caas.auditor.token");
