// @peculiar/x509 depends on tsyringe, which needs a Reflect polyfill loaded before it is
// evaluated. Every module imports the library through this file so the order is guaranteed.
//
// @peculiar/asn1-x509 and @peculiar/asn1-schema are the ASN.1 schemas @peculiar/x509 itself is
// built on (its own dependencies, one hoisted copy each). They are used only to decode
// extensions @peculiar/x509 has no class for (nameConstraints); never hand-parse ASN.1.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as asn1X509 from '@peculiar/asn1-x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509, asn1X509, AsnConvert };
