// mongo-java-server with its in-memory, index-backed backend, for benchmarks
// (scripts/services.sh with MONGO_ENGINE=memory). Usage: java -cp 'libs/*' Launcher.java PORT
//
// mongo-java-server says it is MongoDB 4.0 (wire version 7); the Rust driver refuses
// servers below wire version 9 (MongoDB 4.2). The backend takes any MongoVersion, so this
// one claims 6.0 (wire version 17). What differs from MongoDB is in docs/src/test-servers.md.
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import java.util.List;

public class Launcher {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        MongoVersion version = new MongoVersion() {
            public List<Integer> getVersionArray() {
                return List.of(6, 0, 0);
            }

            public int getWireVersion() {
                return 17;
            }
        };
        MongoServer server = new MongoServer(new MemoryBackend().version(version));
        server.bind("127.0.0.1", port);
        System.out.println("mongo-java-server (memory) listening on 127.0.0.1:" + port);
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        Thread.currentThread().join();
    }
}
