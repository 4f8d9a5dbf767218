// The superuser `admin` that `npm start` creates on first start: its password is
// MERIDIAN_ADMIN_PASSWORD when set, otherwise generated and printed once.
import type { Config } from '../config.ts';
import { createUser, setPassword, userByName } from '../auth/accounts.ts';
import { generateToken } from '../auth/passwords.ts';
import { connectDatabase } from '../db/client.ts';

export async function bootstrapAdmin(config: Config, username = 'admin'): Promise<{ generatedPassword?: string }> {
  const database = connectDatabase(config.databaseUrl, { max: 1, applicationName: 'meridian-bootstrap' });
  try {
    const existing = await userByName(database.db, username);
    if (existing) {
      if (config.adminPassword) await setPassword(database.db, existing.id, config.adminPassword);
      return {};
    }
    const password = config.adminPassword ?? generateToken(18);
    await database.db.transaction((tx) => createUser(tx, { username, password }));
    return config.adminPassword ? {} : { generatedPassword: password };
  } finally {
    await database.close();
  }
}
