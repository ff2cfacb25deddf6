/**
 * effect-vmbus: Hyper-V VMBus channels, packets, completions and GPADLs as scoped Effect resources,
 * over byte-exact VMBus rings.
 *
 * @since 0.1.0
 */

/**
 * Typed little-endian binary structs as Schemas.
 *
 * @since 0.1.0
 */
export * as BinarySchema from "./BinarySchema.js"

/**
 * Channels as scoped resources with KMCL semantics.
 *
 * @since 0.1.0
 */
export * as Channel from "./Channel.js"

/**
 * VMBus channel-management messages and their byte layouts.
 *
 * @since 0.1.0
 */
export * as ChannelMessage from "./ChannelMessage.js"

/**
 * Hyper-V Dynamic Memory (balloon), guest and host sides.
 *
 * @since 0.1.0
 */
export * as DynamicMemory from "./DynamicMemory.js"

/**
 * A transport wrapper that injects faults (signals, control messages, readers, peers, rings), seeded.
 *
 * @since 0.1.0
 */
export * as FaultInjectingTransport from "./FaultInjectingTransport.js"

/**
 * GPADLs as scoped resources.
 *
 * @since 0.1.0
 */
export * as Gpadl from "./Gpadl.js"

/**
 * Guest memory in 4 KiB pages named by page frame numbers.
 *
 * @since 0.1.0
 */
export * as GuestMemory from "./GuestMemory.js"

/**
 * Hyper-V integration-services message layouts.
 *
 * @since 0.1.0
 */
export * as IcMessages from "./IcMessages.js"

/**
 * The in-memory transport (host and guest in one process).
 *
 * @since 0.1.0
 */
export * as InMemoryTransport from "./InMemoryTransport.js"

/**
 * Incoming packets, completed exactly once.
 *
 * @since 0.1.0
 */
export * as IncomingPacket from "./IncomingPacket.js"

/**
 * Integration services, guest and host side.
 *
 * @since 0.1.0
 */
export * as IntegrationServices from "./IntegrationServices.js"

/**
 * VMBus ring packets.
 *
 * @since 0.1.0
 */
export * as Packet from "./Packet.js"

/**
 * Typed device protocols over channels.
 *
 * @since 0.1.0
 */
export * as Protocol from "./Protocol.js"

/**
 * The byte-exact VMBus ring buffer.
 *
 * @since 0.1.0
 */
export * as Ring from "./Ring.js"

/**
 * Channels across worker threads over shared guest memory.
 *
 * @since 0.1.0
 */
export * as SharedMemoryTransport from "./SharedMemoryTransport.js"

/**
 * The Transport service.
 *
 * @since 0.1.0
 */
export * as Transport from "./Transport.js"

/**
 * The native transport: real VMBus channels through Linux `uio_hv_generic`.
 *
 * @since 0.1.0
 */
export * as UioTransport from "./UioTransport.js"

/**
 * Typed errors.
 *
 * @since 0.1.0
 */
export * as VmbusError from "./VmbusError.js"
