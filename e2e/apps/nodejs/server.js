// An Express service with no OpenTelemetry code: what `kotel.dev/inject-nodejs` instruments
// without a rebuild (the e2e suite's fixture, in the nodejs-app image).
const express = require('express');

const app = express();
app.get('/hello', (req, res) => res.json({ Hello: 'World' }));
app.get('/items/:itemId', (req, res) => res.json({ item_id: Number(req.params.itemId), q: req.query.q ?? null }));
app.listen(8000, () => console.log('listening on 8000'));
