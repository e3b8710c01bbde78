// Parses and analyzes every Azure Monitor query cmk-guard deploys with Microsoft's own KQL
// engine (Kusto.Language, npm @kusto/language-service-next), against the schemas of the tables
// they read: CmkGuardFindings_CL as infra/modules/monitor.bicep declares it, and the documented
// columns of AppRequests and StorageBlobLogs. Any diagnostic (syntax error, unknown column,
// wrong type) fails. Run by scripts/check-kql: node check.js <repo root> <node_modules dir>.
'use strict';
const fs = require('fs');
const path = require('path');

const [root, modules] = process.argv.slice(2);
require(path.join(modules, '@kusto/language-service-next/bridge.js'));
require(path.join(modules, '@kusto/language-service-next/Kusto.Language.Bridge.js'));
const S = Kusto.Language.Symbols;

const read = (relative) => fs.readFileSync(path.join(root, relative), 'utf8');
const template = read('infra/modules/monitor.bicep');
const block = template.slice(template.indexOf('var findingColumns = ['));
const columns = [...block.slice(0, block.indexOf('\n]')).matchAll(/name: '(\w+)', type: '(\w+)'/g)]
  .map(([, name, type]) => `${name}:${type}`);
if (columns.length === 0) {
  console.error('check-kql: no findingColumns in infra/modules/monitor.bicep');
  process.exit(1);
}
const tables = [
  new S.TableSymbol.$ctor7('CmkGuardFindings_CL', `(${columns.join(', ')})`, null),
  new S.TableSymbol.$ctor7('AppRequests', '(TimeGenerated:datetime, Name:string, Success:bool, ResultCode:string, OperationId:string, AppRoleName:string, DurationMs:real)', null),
  new S.TableSymbol.$ctor7('StorageBlobLogs', '(TimeGenerated:datetime, OperationName:string, StatusCode:int, Uri:string, AccountName:string)', null),
];
const globals = Kusto.Language.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.$ctor1('workspace', tables, false));

const queries = [];
const workbook = JSON.parse(read('infra/modules/monitor/workbook.json'));
for (const item of workbook.items) {
  if (item.type === 3) queries.push([`workbook.json ${item.name}`, item.content.query]);
}
const dir = 'infra/modules/monitor';
for (const file of fs.readdirSync(path.join(root, dir)).filter((f) => f.endsWith('.kql')).sort()) {
  queries.push([file, read(`${dir}/${file}`).replaceAll('{openMinutes}', '60')]);
}

let failed = 0;
for (const [name, query] of queries) {
  const diagnostics = Kusto.Language.KustoCode.ParseAndAnalyze(query, globals).GetDiagnostics();
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    console.error(`check-kql: ${name}: ${d.Severity} at ${d.Start}: ${d.Message}`);
    failed++;
  }
}
if (failed > 0) process.exit(1);
console.log(`check-kql: ${queries.length} queries parse and use only declared columns (Kusto.Language)`);
