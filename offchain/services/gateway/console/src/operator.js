import { tokenBox } from "./common.js"; tokenBox("caas.operator.token");
