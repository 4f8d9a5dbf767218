// Every workflow Meridian runs. This file and everything it imports is bundled into the
// deterministic workflow sandbox: no Node modules, and activities by type only (see eslint.config.js).
export {};
