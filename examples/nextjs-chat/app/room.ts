/** The one room of this example (server actions publish to it, clients subscribe to it). */
export const ROOM_NAME = "chat:lobby";

/**
 * Where "… is typing" travels: ephemeral publications (no history, no consensus), in a room of
 * its own so that the browser's token can publish there and nowhere else.
 */
export const TYPING_ROOM = "typing:lobby";

/**
 * The live counter: a live-state room (namespace `counter` has `state.enabled`; see the README)
 * holding one key, `count`, which every page may set with a compare-and-set.
 */
export const COUNTER_ROOM = "counter:lobby";
