// The hand-written declarations against the implementation: `impl-types/` is
// what tsc derives from the published JavaScript's JSDoc (the test generates
// it next to this file). Compiling this proves that the package exports the
// very values its declarations name, and that each of them (classes with
// every declared member, functions, constants) has a type the declaration
// accepts. Type-only names (frames, event maps) have no runtime side.
import type * as Declared from "@second-brain-database/signaling";
import type * as Implemented from "./impl-types/sbd-signaling.js";

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

export const sameExports: Same<keyof typeof Implemented, keyof typeof Declared> = true;

declare const implementation: typeof Implemented;
export const implementsDeclarations: typeof Declared = implementation;

declare const client: Implemented.SignalingClient;
export const clientAsDeclared: Declared.SignalingClient = client;

declare const calls: Implemented.CallClient;
export const callsAsDeclared: Declared.CallClient = calls;

declare const peer: Implemented.RemotePeer;
export const peerAsDeclared: Declared.RemotePeer = peer;

declare const error: Implemented.SignalingError;
export const errorAsDeclared: Declared.SignalingError = error;

// Every event the implementation's map names is declared, with a detail
// type the declaration's handlers accept, and the other way round.
export const sameEvents: Same<keyof Implemented.SignalingEventMap, Declared.SignalingEventType> =
  true;
