// @peculiar/x509 depends on tsyringe, which needs a Reflect polyfill loaded before it is
// evaluated. Every module imports the library through this file so the order is guaranteed.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
